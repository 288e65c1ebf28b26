"""The parts of the one training loop (lmkit.train) for every torch family.

    config      TrainConfig, its defaults (resolve_train_config), --time-budget durations
    optim       the optimizer and the learning-rate schedule
    plan        how long a run is: steps, budgets, when to validate; the batches of an epoch
    state       the loop's state (LoopState): one schema for checkpoints, resume and run.json
    checkpoint  checkpoint folders: written whole, swapped in atomically, read back with checks
    signals     SIGINT/SIGTERM -> stop at the next step boundary, and the Interrupted error
    budget      --time-budget over the whole command: the final measurement estimated and reserved
    progress    what training shows, refreshed by time (the reporters are lmkit.logs')

Layering: training (lmkit.train, lmkit.distributed, this package) -> models -> data -> core. Nothing
here imports lmkit.train; the models never import the training layer."""
