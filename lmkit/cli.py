"""The `lmkit` command: parse -> call lmkit.api -> render. No math and no torch here.

One handler (LmkitGroup.invoke) turns every LmkitError into `error: ...` on stderr and its exit code;
LmkitGroup.main does the same for typer's own parse errors and, as a last resort, for bugs."""

from __future__ import annotations

import copy
import functools
import inspect
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any, List, Optional

import typer
from typer.core import TyperArgument, TyperGroup

from . import __version__, defaults, logs
from .distributed import error_line, is_main_process
from .errors import LmkitError, Terminated, UsageError, on_sigterm
from .memory import prefer_small_pages
from .lineup import default_lineup
from .models import families, flag_options, neural_kinds, owners
from .models.ngram.smoothing import SMOOTHINGS, arpa_exportable
from .render import FORMATS, Messages, default_format, write_record, write_rows


# click's exception base, from the click that typer runs on (newer typer vendors its own copy)
_ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
_ClickUsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


def _reader_gone() -> int:
    """stdout's reader closed the pipe (`lmkit ... | head`): end quietly with exit code 0, no traceback and no
    "Broken pipe" message; stdout now goes to /dev/null so the flush at exit cannot fail again."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # stdout already closed or replaced by a test runner
        pass
    return 0


def _one_line(text: str) -> str:
    """A message as one stderr line, whatever its source put in it."""
    return " ".join(str(text).split())


# -- help as people read it: NAME/[NAME]/NAME... and TEXT/INTEGER/PATH, never {name}, <bool> or <list[str]> ----
TYPE_LABELS = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "Path": "PATH", "bool": ""}


def _type_label(param: Any) -> str:
    """What a value of `param` looks like: TEXT, INTEGER, FLOAT, PATH; nothing for a flag."""
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return ""
    bare = param.bare_type() if hasattr(param, "bare_type") else getattr(getattr(param, "type", None), "name", "")
    inner = bare[len("list["):-1] if bare.startswith("list[") else bare
    return TYPE_LABELS.get(inner, inner.upper())


def _argument_type_label(argument: Any, *args: Any, **kwargs: Any) -> str:
    return _type_label(argument)


class HelpArgument(TyperArgument):
    """An argument on the usage line as FILE, [FILE] or FILES..., with its type beside it in the table."""

    usage_piece = ""

    def get_usage_pieces(self, ctx: Any) -> list[str]:
        return [self.usage_piece]

    def display_type_rich(self, ctx: Any) -> Optional[str]:
        return _type_label(self)


def tidy_help(command: Any) -> None:
    """Help without typer's artifacts, for `command` and its subcommands: argument names in capitals,
    option values as TEXT/INTEGER/FLOAT/PATH, flags without a value, and a one-line summary per command
    in a group's list (the first sentence of its help)."""
    for param in command.params:
        if isinstance(param, TyperArgument) and not isinstance(param, HelpArgument):
            explicit = param.metavar is not None
            param.metavar = param.metavar or param.name.upper()
            param.__class__ = HelpArgument  # same object, help-only methods replaced
            piece = param.metavar if explicit or param.required else f"[{param.metavar}]"
            param.usage_piece = piece + ("..." if param.nargs != 1 and not explicit else "")
            # typer < 0.29 asks the argument's type for the table's type column (else prints <path>): a copy of
            # the type, so that a type object other parameters share is left as it is
            param.type = copy.copy(param.type)
            param.type.get_metavar = functools.partial(_argument_type_label, param)
        elif param.param_type_name == "option" and param.metavar is None:
            param.metavar = _type_label(param)
    if "get_help_option" not in vars(command):  # -h/--help is made when first asked for: a flag too
        made = command.get_help_option

        def get_help_option(ctx: Any) -> Any:
            option = made(ctx)
            if option is not None:
                option.metavar = ""
            return option

        command.get_help_option = get_help_option
    for sub in getattr(command, "commands", {}).values():
        if sub.help and sub.short_help is None:
            first = inspect.cleandoc(sub.help).split("\n\n")[0].replace("\n", " ")
            sub.short_help = re.split(r"(?<=\.)\s+(?=[A-Z])", first)[0]
        tidy_help(sub)


class LmkitGroup(TyperGroup):
    """Click group whose invoke is the CLI's single error boundary; main() catches what parsing raises
    before invoke (unknown options, bad numbers, missing arguments), so that is one line too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        tidy_help(self)

    def main(self, args: Optional[List[str]] = None, prog_name: Optional[str] = None,
             complete_var: Optional[str] = None, standalone_mode: bool = True, **extra: Any) -> Any:
        from typer.completion import completion_init

        completion_init()  # tab completion (`_LMKIT_COMPLETE=complete_bash lmkit ...`) in typer's dialect
        args = _with_shell(list(sys.argv[1:] if args is None else args))
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            sys.stdout.flush()  # here, where a reader that went away is handled, not at interpreter exit
        except BrokenPipeError:
            sys.exit(_reader_gone())
        except _ClickException as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # `lmkit vocab`: the help is the answer
                if exc.format_message().strip():
                    typer.echo(exc.format_message(), err=True)
            else:
                where = f"; see '{exc.ctx.command_path} -h'" if getattr(exc, "ctx", None) is not None else ""
                if is_main_process():  # every torchrun rank parses the same command line: rank 0 tells
                    typer.echo(f"error: {_one_line(exc.format_message()).rstrip('.')}{where}", err=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            sys.exit(1)
        except MemoryError:
            typer.echo("error: out of memory (use a smaller model, batch, vocabulary or input)", err=True)
            sys.exit(1)
        except Exception as exc:  # a bug: still one line, and the traceback on request
            if os.environ.get("LMKIT_DEBUG"):
                raise
            typer.echo(f"error: internal error ({type(exc).__name__}: {_one_line(exc)}); this is a bug in lmkit, "
                       "LMKIT_DEBUG=1 shows the traceback", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except LmkitError as exc:
            # under torchrun a failure every rank meets alike (a bad option, a collective stop) is told once
            same_everywhere = getattr(exc, "same_on_every_rank", isinstance(exc, UsageError))
            line = error_line(_one_line(exc.message), same_everywhere)
            if line:
                typer.echo(line, err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt as exc:
            typer.echo("terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted", err=True)
            ctx.exit(143 if isinstance(exc, Terminated) else 130)
        except BrokenPipeError:  # `lmkit score ... | head`
            ctx.exit(_reader_gone())
        except OSError as exc:  # a full disk / file-size limit / quota outside lmkit.atomic (e.g. stdout)
            from .atomic import DISK_FULL

            if exc.errno not in DISK_FULL:
                raise
            typer.echo(f"error: disk full or file too large while writing {exc.filename or 'the output'}", err=True)
            ctx.exit(1)


def _typer(**kw) -> typer.Typer:
    return typer.Typer(cls=LmkitGroup, pretty_exceptions_enable=False, no_args_is_help=True,
                       add_completion=False, rich_markup_mode="rich",
                       context_settings={"help_option_names": ["-h", "--help"]}, **kw)


app = _typer(help="""Build vocabularies, train and score [bold]comparable[/] language models.

Every model family scores the same tokens under the same protocol with the same vocabulary.

[dim]Examples:[/]
  lmkit vocab build corpora/shakespeare/train.txt --min-count 2 -o vocab.json

  lmkit train --model ngram:kn5 --corpus corpora/shakespeare -o runs/kn5

  lmkit score runs/kn5 corpora/shakespeare/test.txt

  lmkit export-arpa runs/kn5 -o kn5.arpa

""")
vocab_app = _typer(help="Build and inspect vocabularies.")
app.add_typer(vocab_app, name="vocab", rich_help_panel="Data")

FormatOpt = typer.Option(None, "--format", "-f", help=f"Output format: {', '.join(FORMATS)} "
                         "(default: table on a terminal, tsv in a pipe).", case_sensitive=False)
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress messages on stderr.")


def _check_log_format(value: str) -> str:
    if value.lower() not in logs.LOG_FORMATS:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(logs.LOG_FORMATS)}", param_hint="--log-format")
    return value.lower()


LogFormatOpt = typer.Option("text", "--log-format", callback=_check_log_format, help="Progress and messages on "
                            "stderr: text (a live bar on a terminal) or json (one JSON object per line, for scripts).")
WideOpt = typer.Option(False, "--wide", help="Table: every column, however wide (without it the table fits the "
                       "terminal and names the columns it leaves out).")
# score and bleu on a translation run: which sentence pair to evaluate (train/compare's --src/--tgt are suffixes)
PairSrcOpt = typer.Option(None, "--src", help="Translation run: source file of the pair to evaluate "
                          "(default: the run's test pair).")
PairTgtOpt = typer.Option(None, "--tgt", help="Translation run: target file (scored side / reference translations).")


def _check_format(fmt: Optional[str]) -> Optional[str]:
    if fmt is not None and fmt.lower() not in FORMATS:
        raise typer.BadParameter(f"{fmt!r} is not one of {', '.join(FORMATS)}", param_hint="--format")
    return fmt.lower() if fmt else None


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lmkit {__version__}")
        raise typer.Exit()


SHELLS = ("bash", "zsh", "fish")
COMPLETION_OPTIONS = ("--install-completion", "--show-completion")


def _current_shell() -> str:
    """The user's shell by name: $SHELL, else the shell lmkit runs in, else '' (then asked for by name)."""
    shell = os.path.basename(os.environ.get("SHELL", ""))
    if shell:
        return shell
    try:
        import shellingham  # typer's own shell detection

        return shellingham.detect_shell()[0]
    except (ImportError, OSError):  # not installed / ShellDetectionFailure
        return ""


def _with_shell(args: List[str]) -> List[str]:
    """`lmkit --show-completion` (or --install-completion) without a shell name: add the current shell."""
    for i, arg in enumerate(args):
        if not arg.startswith("-"):  # a command: completion options belong to `lmkit` itself
            break
        if arg in COMPLETION_OPTIONS and (i + 1 == len(args) or args[i + 1].startswith("-")):
            return [*args[: i + 1], _current_shell(), *args[i + 1:]]
    return args


def _completion(ctx: typer.Context, param: typer.CallbackParam, value: Optional[str]) -> None:
    """--show-completion SHELL prints the script; --install-completion SHELL writes it where SHELL reads it."""
    if value is None or ctx.resilient_parsing:
        return
    from typer.completion import completion_init, get_completion_script, install

    if value not in SHELLS:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(SHELLS)}" if value else
                                 f"cannot tell which shell you use; name it: {param.opts[0]} bash|zsh|fish")
    completion_init()
    prog = ctx.find_root().info_name or "lmkit"
    variable = f"_{prog.replace('-', '_').upper()}_COMPLETE"
    if param.name == "show_completion":
        typer.echo(get_completion_script(prog_name=prog, complete_var=variable, shell=value))
    else:
        shell, path = install(shell=value, prog_name=prog, complete_var=variable)
        typer.echo(f"{shell} completion installed in {path}; it works in shells started from now on", err=True)
    raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit."),
          install_completion: Optional[str] = typer.Option(
              None, "--install-completion", metavar="[SHELL]", callback=_completion, is_eager=True,
              expose_value=False, help="Install tab completion for bash, zsh or fish (default: $SHELL)."),
          show_completion: Optional[str] = typer.Option(
              None, "--show-completion", metavar="[SHELL]", callback=_completion, is_eager=True,
              expose_value=False, help="Print the tab-completion script for bash, zsh or fish (default: "
              "$SHELL), to install it by hand.")) -> None:
    """lmkit: comparable language models from the command line."""


# -- vocab ------------------------------------------------------------------------------------------
@vocab_app.command("build")
def vocab_build(
    files: List[str] = typer.Argument(..., help="Training text file(s); '-' reads stdin."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Vocabulary JSON to write "
                                          "(default, or '-': print it to stdout)."),
    level: str = typer.Option(defaults.LEVEL, help="Tokenisation level: word, char, bpe or unigram (subwords "
                                              "trained on the text, byte fallback: no <unk>)."),
    lowercase: bool = typer.Option(False, "--lowercase", help="Lower-case text before counting."),
    normalize: Optional[str] = typer.Option(None, help="Unicode normalisation (NFC, NFKC, ...)."),
    min_count: int = typer.Option(defaults.MIN_COUNT, help="Keep tokens seen at least this often."),
    max_size: Optional[int] = typer.Option(None, "--max-size", "--vocab-size",
                                           help="Keep at most this many ids (incl. reserved); bpe and unigram: "
                                                "the tokenizer's size (default 8000; unigram may stop short)."),
    parallel: bool = typer.Option(False, "--parallel", help="Joint vocabulary for --task translate (give both "
                                  "sides' train files): adds <sep> as id 4."),
    quiet: bool = QuietOpt,
) -> None:
    """Build a vocabulary from training text (ids 0-3 are <pad> <unk> <s> </s>).

    [dim]Example:[/] lmkit vocab build corpora/shakespeare/train.txt --level word --min-count 2 -o vocab.json
    """
    from . import api

    output = None if str(output) == "-" else output
    vocab = api.build_vocab(files, level=level, lowercase=lowercase, normalize=normalize,
                            min_count=min_count, max_size=max_size, output=output, with_sep=parallel)
    if output is None:
        import json

        typer.echo(json.dumps(vocab.to_dict(), ensure_ascii=False))
    else:
        Messages(quiet).info(f"{output}: {len(vocab):,} ids, vocab_id {vocab.vocab_id}")


@vocab_app.command("show")
def vocab_show(
    vocab: Path = typer.Argument(..., help="Vocabulary JSON file."),
    coverage: Optional[str] = typer.Option(None, help="Also report the OOV rate on this text file."),
    top: int = typer.Option(20, help="How many of the most frequent tokens to list (all when the vocabulary "
                            "has fewer; 0: none)."),
    fmt: Optional[str] = FormatOpt,
) -> None:
    """Size, options, most frequent tokens and OOV rate of a vocabulary.

    table: the summary, then the top tokens; tsv/csv/markdown: the top tokens, one row each (id, token,
    count, share), most frequent first; json/jsonl: everything as one object.

    [dim]Examples:[/]
      lmkit vocab show vocab.json --coverage corpora/shakespeare/test.txt

      lmkit vocab show vocab.json --top 1000 --format tsv > top1000.tsv
    """
    from . import api

    fmt = default_format(_check_format(fmt))
    report = api.vocab_report(vocab, coverage, top)
    if fmt in ("json", "jsonl"):
        write_record(report, fmt)
        return
    top_rows = report.pop("top")
    if fmt != "table":  # data for scripts: the tokens (the summary is in json)
        write_rows(top_rows, fmt, columns=["id", "token", "count", "share"])
        return
    cov = report.pop("coverage", None)
    if cov:
        report.update({f"coverage_{k}": v for k, v in cov.items()})
    write_record(report, fmt, title="vocabulary")
    write_rows(top_rows, fmt, title=f"top {len(top_rows)} tokens")


# -- train ------------------------------------------------------------------------------------------
# Help texts name the families from the registry (lmkit/models/__init__.py): no family list lives here.
NEURAL = f"Neural models ({', '.join(neural_kinds())})"
BUDGET = "Training (neural models)"


def _owned(text: str, option: str) -> str:
    """A model flag's help, naming the families that own it."""
    return f"{text} ({', '.join(owners(option))})."


def _asked(ctx: typer.Context, name: str) -> Any:
    """A shared-default option's value when the command line or a --config recipe gave it, else None: the request
    then applies lmkit.defaults itself (by task for --context; the --vocab's own level and min-count)."""
    return None if getattr(ctx.get_parameter_source(name), "name", "") == "DEFAULT" else ctx.params[name]


def _read_recipe(ctx: typer.Context, param: typer.CallbackParam, value: Optional[Path]) -> Optional[Path]:
    """--config FILE (eager): the recipe's values become this command's defaults (click's default_map), so a flag
    given on the command line overrides the file; a bad file is one usage-error line (exit 2)."""
    if value is not None:
        from .pipeline.recipe import recipe_defaults

        try:
            ctx.default_map = {**(ctx.default_map or {}), **recipe_defaults(value, ctx.command.params)}
        except LmkitError as exc:
            raise _ClickUsageError(_one_line(exc.message), ctx=ctx) from None
    return value


def _refuse_beside_resume(ctx: typer.Context, allowed: set[str]) -> None:
    """--resume continues a run as stored: model, data, vocabulary and output options given with it would be
    silently ignored, so they are refused (budgets and devices may change; they are `allowed`)."""
    from .errors import UsageError

    given = [p for p in ctx.command.params if p.name not in allowed and
             getattr(ctx.get_parameter_source(p.name), "name", "") == "COMMANDLINE"]
    if given:
        flags = ", ".join(max(p.opts, key=len) for p in given)
        raise UsageError(f"{flags} cannot change a resumed run (it continues as stored); with --resume give only "
                         "budgets, optimiser and device options")


@app.command(rich_help_panel="Models")
def train(
    ctx: typer.Context,
    model: str = typer.Option("ngram", "--model", "-m", help="Model spec: "
                              f"{', '.join(s for f in families() for s in f.spellings)}."),
    config: Optional[Path] = typer.Option(None, "--config", is_eager=True, callback=_read_recipe,
                                          help="TOML recipe: any of these options as key = value (recipe.toml of a "
                                          "run trains it again); flags given here override it."),
    corpus: Optional[Path] = typer.Option(None, help="Corpus folder with train, valid and (optionally) test files."),
    train_file: Optional[str] = typer.Option(None, "--train", help="Training file (overrides --corpus)."),
    valid_file: Optional[str] = typer.Option(None, "--valid", help="Validation file."),
    test_file: Optional[str] = typer.Option(None, "--test", help="Test file (scored after training)."),
    vocab: Optional[Path] = typer.Option(None, help="Use this vocabulary instead of building one."),
    level: str = typer.Option(defaults.LEVEL, help="word, char, bpe or unigram (with --vocab: the vocabulary's)."),
    lowercase: Optional[bool] = typer.Option(None, "--lowercase/--no-lowercase", help="Lower-case text."),
    normalize: Optional[str] = typer.Option(None, help="Unicode normalisation (NFC, NFKC, ...)."),
    min_count: int = typer.Option(defaults.MIN_COUNT, help="Vocabulary: keep tokens seen at least this often."),
    max_size: Optional[int] = typer.Option(None, "--max-size", "--vocab-size",
                                           help="Vocabulary: at most this many ids; bpe and unigram: the "
                                                "tokenizer's size (default 8000; unigram may stop short)."),
    context: str = typer.Option(defaults.CONTEXT, help="Protocol context: sentence or stream (--task translate: "
                                f"{defaults.TRANSLATE_CONTEXT})."),
    keep_blank_lines: bool = typer.Option(False, help="Score blank lines as empty sequences."),
    task: Optional[str] = typer.Option(None, help="lm, or translate: a prefix LM over 'source <sep> target' "
                                       "of a parallel --corpus, scored on the target side (default: translate "
                                       "when --src/--tgt are given or the folder holds train.src + train.tgt)."),
    src: Optional[str] = typer.Option(None, "--src", help="Parallel corpus: suffix of the source files "
                                      "(de for train.de)."),
    tgt: Optional[str] = typer.Option(None, "--tgt", help="Parallel corpus: suffix of the target files "
                                      "(en for train.en)."),
    order: Optional[int] = typer.Option(None, help="n-gram order (1-10).", rich_help_panel="n-gram models"),
    smoothing: Optional[str] = typer.Option(None, help=f"n-gram smoothing: {' '.join(SMOOTHINGS)}.",
                                            rich_help_panel="n-gram models"),
    k: Optional[str] = typer.Option(None, help="add-k constant, or 'auto' to tune it on valid.",
                                    rich_help_panel="n-gram models"),
    memory: Optional[str] = typer.Option(None, help="Bound n-gram counting and smoothing buffers (512M, 4G, "
                                         "1.5G): count out of core, spilling sorted runs to --tmp. Same model.",
                                         rich_help_panel="n-gram models"),
    tmp: Optional[Path] = typer.Option(None, help="Folder for --memory's spill files (default: system temp).",
                                       rich_help_panel="n-gram models"),
    engine: Optional[str] = typer.Option(None, help="Count n-grams locally (default) or on dask.",
                                         rich_help_panel="n-gram models"),
    scheduler: Optional[str] = typer.Option(None, help="Dask scheduler: tcp://host:8786, or local:N for a "
                                            "LocalCluster of N worker processes.", rich_help_panel="n-gram models"),
    arpa: Optional[str] = typer.Option(None, "--arpa", help="Also write the model as an ARPA file ('-': to stdout, "
                                       "like KenLM's lmplz); without -o the run folder is temporary and removed.",
                                       rich_help_panel="n-gram models"),
    layers: Optional[int] = typer.Option(None, help=_owned("Layers", "layers"), rich_help_panel=NEURAL),
    hidden: Optional[int] = typer.Option(None, help=_owned("Hidden size", "hidden"), rich_help_panel=NEURAL),
    embed: Optional[int] = typer.Option(None, help=_owned("Embedding size", "embed"), rich_help_panel=NEURAL),
    d_model: Optional[int] = typer.Option(None, help="Transformer width.", rich_help_panel=NEURAL),
    heads: Optional[int] = typer.Option(None, help="Attention heads.", rich_help_panel=NEURAL),
    dropout: Optional[float] = typer.Option(None, help="Dropout probability.", rich_help_panel=NEURAL),
    tie_weights: Optional[bool] = typer.Option(None, "--tie-weights/--no-tie-weights",
                                               help="Share input and output embeddings.", rich_help_panel=NEURAL),
    window: Optional[int] = typer.Option(None, help="MLP history length (previous tokens).",
                                         rich_help_panel=NEURAL),
    block_size: Optional[int] = typer.Option(None, help="Transformer history length.", rich_help_panel=NEURAL),
    cell: Optional[str] = typer.Option(None, help="Recurrent cell: lstm, gru or rnn.", rich_help_panel=NEURAL),
    positions: Optional[str] = typer.Option(None, help="Transformer positions: learned or sinusoidal.",
                                            rich_help_panel=NEURAL),
    epochs: Optional[float] = typer.Option(None, help="Budget: passes over the training data.",
                                           rich_help_panel=BUDGET),
    max_tokens: Optional[int] = typer.Option(None, help="Budget: training tokens.", rich_help_panel=BUDGET),
    time_budget: Optional[str] = typer.Option(None, help="Budget: wall time of the whole command (training, "
                                              "validation, final scoring, writing), e.g. 90s, 10m, 1h.",
                                              rich_help_panel=BUDGET),
    optimizer: Optional[str] = typer.Option(None, help="adamw or sgd.", rich_help_panel=BUDGET),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate.", rich_help_panel=BUDGET),
    batch_size: Optional[int] = typer.Option(None, help="Sequences (sentence) or rows (stream) per batch.",
                                             rich_help_panel=BUDGET),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", "--bptt", help="Stream context: tokens per window.",
                                          rich_help_panel=BUDGET),
    warmup_steps: Optional[int] = typer.Option(None, "--warmup", help="Linear warmup steps.",
                                               rich_help_panel=BUDGET),
    schedule: Optional[str] = typer.Option(None, help="LR decay: cosine, linear, constant or inverse_sqrt "
                                           "(Vaswani et al.).",
                                           rich_help_panel=BUDGET),
    clip: Optional[float] = typer.Option(None, help="Gradient-norm clip (0: off).", rich_help_panel=BUDGET),
    weight_decay: Optional[float] = typer.Option(None, help="Decoupled weight decay.", rich_help_panel=BUDGET),
    eval_every: Optional[int] = typer.Option(None, help="Steps between validations.", rich_help_panel=BUDGET),
    patience: Optional[int] = typer.Option(None, help="Early stopping: validations without improvement.",
                                           rich_help_panel=BUDGET),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda, cuda:N or mps.", rich_help_panel=BUDGET),
    precision: Optional[str] = typer.Option(None, help="auto, fp32, bf16 or fp16 (autocast).",
                                            rich_help_panel=BUDGET),
    compile_: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile the model.",
                                            rich_help_panel=BUDGET),
    threads: Optional[int] = typer.Option(None, help="CPU threads.", rich_help_panel=BUDGET),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue this run folder from its last "
                                          "checkpoint (budgets given again replace the stored ones).",
                                          rich_help_panel=BUDGET),
    sets: List[str] = typer.Option([], "--set", help="Any config field: --set key=value (repeatable)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Run folder to write."),
    runs_dir: Path = typer.Option(Path("runs"), envvar="LMKIT_RUNS", help="Where runs go without -o."),
    force: bool = typer.Option(False, "--force", help="Replace a non-empty -o folder."),
    seed: int = typer.Option(0, help="Random seed (same seed on CPU -> same numbers)."),
    quiet: bool = QuietOpt,
    log_format: str = LogFormatOpt,
) -> None:
    """Train a model and write a run folder; prints only the run folder's path on stdout.

    [dim]Examples:[/]
      lmkit train --model ngram:kn5 --corpus corpora/shakespeare -o runs/kn5

      lmkit train --model ngram --order 3 --smoothing addk --k auto --corpus ptb

      lmkit train --model ngram:kn5 --corpus big/ --memory 4G --tmp /scratch

      lmkit train --model lstm --layers 2 --hidden 650 --dropout 0.5 --tie-weights --context stream --epochs 10

      lmkit train --model transformer --layers 4 --d-model 256 --heads 4 --time-budget 10m -o runs/tf

      lmkit train --model transformer --corpus multi30k --src de --tgt en -o runs/de-en

      lmkit train --resume runs/tf
    """
    from . import api

    # progress: a bar, lines or JSON (under torchrun from rank 0 alone)
    progress = ctx.with_resource(logs.reporting(logs.reporter(quiet or not is_main_process(), log_format)))
    msgs = Messages(quiet)
    train_options = {"epochs": epochs, "max_tokens": max_tokens, "time_budget": time_budget,
                     "optimizer": optimizer, "lr": lr, "batch_size": batch_size, "seq_len": seq_len,
                     "warmup_steps": warmup_steps, "schedule": schedule, "clip": clip,
                     "weight_decay": weight_decay, "eval_every": eval_every, "patience": patience,
                     "device": device, "precision": precision, "compile": compile_, "threads": threads}
    if resume is not None:
        _refuse_beside_resume(ctx, allowed={"resume", "quiet", "compile_", *train_options})
        run_dir = api.resume(resume, train_options, log=msgs.info, progress=not quiet)
    else:
        req = api.TrainRequest(
            model=model, corpus=corpus, train=train_file, valid=valid_file, test=test_file, vocab=vocab,
            level=_asked(ctx, "level"), lowercase=lowercase, normalize=normalize, min_count=_asked(ctx, "min_count"),
            max_size=max_size, context=_asked(ctx, "context"), keep_blank_lines=keep_blank_lines, task=task, src=src,
            tgt=tgt,
            options={name: ctx.params[name] for name in flag_options()},  # the flags some family owns
            train_options=train_options, sets=sets, output=output, runs_dir=runs_dir, force=force,
            seed=seed, progress=not quiet, memory=memory, tmp=tmp, engine=engine, scheduler=scheduler,
        )
        if arpa is not None:  # stdout carries the ARPA text when it is '-': the folder is named on stderr
            run_dir = api.train_arpa(req, arpa, log=msgs.info)
            if run_dir is not None and arpa == "-":
                msgs.info(f"run folder: {run_dir}")
            if run_dir is None or arpa == "-":
                return
        else:
            run_dir = api.train(req, log=msgs.info)
    progress.close()  # the bar is gone before the path is printed
    if is_main_process():  # under torchrun: one path on stdout, from rank 0
        typer.echo(str(run_dir))


@app.command(rich_help_panel="Models")
def models(fmt: Optional[str] = FormatOpt, wide: bool = WideOpt) -> None:
    """Every model family with its options and defaults.

    Mixtures are not listed: they are built from trained runs with `lmkit mix`, and have no options.

    [dim]Example:[/] lmkit models --format json
    """
    from . import api

    fmt = default_format(_check_format(fmt))
    rows = api.list_models()
    if fmt in ("json", "jsonl"):
        write_rows(rows, fmt)
        return
    flat = [{"family": r["family"], "option": o["name"], "type": o["type"], "default": o["default"],
             "description": r["description"] if i == 0 else o.get("why", "")}  # why: a default set from the data
            for r in rows for i, o in enumerate(r["options"])]
    write_rows(flat, fmt, title="model families", wide=wide)


# -- score ------------------------------------------------------------------------------------------
SCORE_TABLE = ("run", "model", "file", "tokens", "oov", "perplexity", "bits_per_char", "bits_per_byte")


@app.command(rich_help_panel="Models")
def score(
    paths: List[str] = typer.Argument(..., metavar="RUN... [FILE...]", help="Run folders or ARPA files "
                                      "(.arpa / .arpa.gz, from any tool), then the text files to score ('-' reads "
                                      "stdin). The first is always a model; a later folder or ARPA file is a "
                                      "model too, anything else a text."),
    text: List[str] = typer.Option([], "--text", "-t", help="Text to score (repeatable; `--text a.txt b.txt` "
                                   "scores both). One row per (run, text) pair."),
    src: Optional[str] = PairSrcOpt,
    tgt: Optional[str] = PairTgtOpt,
    per_line: bool = typer.Option(False, "--per-line", help="One record per scored line."),
    per_token: bool = typer.Option(False, "--per-token", help="One record per scored token."),
    fmt: Optional[str] = FormatOpt,
    wide: bool = WideOpt,
    device: str = typer.Option("auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps "
                               "(neural models; n-grams ignore it)."),
    stride: Optional[int] = typer.Option(None, help="Transformer: sliding-window stride for inputs longer "
                                         "than --block-size (default: half the block; 1 = full context)."),
    save: bool = typer.Option(False, "--save", help="FILE is the run's own test file: store its per-sequence "
                              "scores in the run folder (test_scores.npz) for compare --bootstrap. For runs "
                              "trained before lmkit stored them; refused unless they reproduce run.json."),
) -> None:
    """Perplexity of texts under models, each measured by the protocol its model was trained with.

    `lmkit score RUN FILE` prints one record; several runs and/or files (or --text) print one row per
    (run, file) pair: --format jsonl gives one JSON line per pair, json a list.

    [dim]Examples:[/]
      lmkit score runs/kn5 corpora/shakespeare/test.txt

      lmkit score runs/kn3 runs/kn5 --text valid.txt test.txt --format jsonl

      lmkit score runs/kn5 - < test.txt

      lmkit score runs/old-kn5 corpora/shakespeare/test.txt --save   # per-sequence scores for --bootstrap

      cat test.txt | lmkit score runs/kn5 - --per-line --format jsonl

      lmkit score kn5.arpa corpora/shakespeare/test.txt
    """
    from . import api

    fmt = _check_format(fmt)
    if per_line and per_token:
        raise typer.BadParameter("choose one of --per-line and --per-token")
    models, texts = api.split_models_texts(paths, text)
    many = bool(text) or len(models) > 1 or len(texts) > 1
    msgs = Messages()
    with logs.reporting(logs.reporter()):  # a bar while a large ARPA file loads (on a terminal)
        results = api.score_many(models, texts, src=src, tgt=tgt, device=device, keep_words=per_token,
                                 stride=stride, save=save, log=msgs.info)
    for result in results:
        if result.saved is not None:
            msgs.info(f"wrote {result.saved}")
    for label in dict.fromkeys(r.model for r in results if not r.score.normalised):
        msgs.warn(f"{label} is not normalised: its 'perplexity' is not a perplexity "
                  "and must not be ranked against other models")
    if per_line or per_token:
        rows = [{**({"run": r.run, "file": r.file} if many else {}), **row} for r in results
                for row in (r.score.per_line() if per_line else r.score.per_token(r.words))]
        write_rows(rows, fmt, wide=wide)
        return
    summaries = [{"run": r.run, "model": r.model, "file": r.file, **r.summary()} if many else r.summary()
                 for r in results]
    if default_format(fmt) not in ("json", "jsonl"):
        for summary in summaries:
            summary["protocol"] = ",".join(f"{k}={v}" for k, v in summary["protocol"].items())
    if not many:
        write_record(summaries[0], fmt, title=f"{results[0].model} on {results[0].file}")
    elif default_format(fmt) == "table":  # the columns to read; the data formats carry every key
        write_rows(summaries, fmt, columns=[c for c in SCORE_TABLE if any(c in s for s in summaries)],
                   title="scores", wide=wide)
    else:
        write_rows(summaries, fmt)


# -- generate and bleu ------------------------------------------------------------------------------
DECODING = "Decoding"
TEXT_FORMATS = ("text",) + FORMATS


def _text_format(fmt: Optional[str]) -> str:
    """`text` (the default) or one of the data formats; a bad name is a one-line usage error."""
    from .errors import UsageError

    fmt = (fmt or "text").lower()
    if fmt not in TEXT_FORMATS:
        raise UsageError(f"--format {fmt!r} is not one of {', '.join(TEXT_FORMATS)}")
    return fmt


@app.command(rich_help_panel="Models")
def generate(
    model: Path = typer.Argument(..., help="Run folder, or an ARPA file (.arpa / .arpa.gz)."),
    prompt: List[str] = typer.Option([], "--prompt", "-p", help="Text to continue (repeatable; none and no "
                                     "--prompt-file: generate from <s>)."),
    prompt_file: Optional[str] = typer.Option(None, "--prompt-file", help="One prompt per line; '-' reads stdin."),
    max_tokens: int = typer.Option(40, help="Most tokens per output (</s> counts as one).", rich_help_panel=DECODING),
    strategy: Optional[str] = typer.Option(None, help="greedy, sample or beam (default: sample when "
                                           "--temperature/--top-k/--top-p is given, beam when --beam or "
                                           "--length-penalty is, else greedy).",
                                           rich_help_panel=DECODING),
    temperature: Optional[float] = typer.Option(None, help="sample: < 1 sharpens, > 1 flattens (default 1).",
                                                rich_help_panel=DECODING),
    top_k: Optional[int] = typer.Option(None, help="sample: only the k most probable tokens.",
                                        rich_help_panel=DECODING),
    top_p: Optional[float] = typer.Option(None, help="sample: only the most probable tokens holding this much "
                                          "probability, in (0, 1].", rich_help_panel=DECODING),
    beam: Optional[int] = typer.Option(None, help="beam: hypotheses kept per prompt (default 4).",
                                       rich_help_panel=DECODING),
    length_penalty: Optional[float] = typer.Option(None, help="beam: rank outputs by logprob / length**penalty "
                                                   "(default 0: by sequence log-probability).",
                                                   rich_help_panel=DECODING),
    seed: Optional[int] = typer.Option(None, help="sample: random seed; the same seed gives the same text "
                                       "(default: fresh randomness).", rich_help_panel=DECODING),
    ban_unk: bool = typer.Option(False, "--ban-unk", help="Never generate <unk>.", rich_help_panel=DECODING),
    num: int = typer.Option(1, "--num", "-n", help="Outputs per prompt (sample: independent draws; beam: the "
                            "n best).", rich_help_panel=DECODING),
    fmt: Optional[str] = typer.Option(None, "--format", "-f", help="text (default: one output per line) or "
                                      f"{', '.join(FORMATS)}.", case_sensitive=False),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:N or auto (neural models)."),
) -> None:
    """Continue prompts with a model: greedy, sampling (temperature, top-k, top-p) or beam search.

    [dim]Examples:[/]
      lmkit generate runs/lstm --prompt "to be or" --max-tokens 30 --top-k 40 --seed 1

      lmkit generate runs/kn5 --prompt-file prompts.txt --strategy beam --beam 8 --format jsonl
    """
    from . import api

    fmt = _text_format(fmt)
    result = api.generate(model, prompt, prompt_file=prompt_file, max_tokens=max_tokens, strategy=strategy,
                          temperature=temperature, top_k=top_k, top_p=top_p, beam=beam,
                          length_penalty=length_penalty, seed=seed, ban_unk=ban_unk, num=num, device=device,
                          log=Messages().warn)
    if fmt == "text":
        for out in result.outputs:
            typer.echo(out["text"])
    else:
        write_rows(result.outputs, fmt, title=f"{result.model}, {result.decoding['strategy']}")


@app.command(rich_help_panel="Models")
def bleu(
    model: Path = typer.Argument(..., help="Run folder, or an ARPA file (.arpa / .arpa.gz)."),
    file: Optional[str] = typer.Argument(None, help="Monolingual test text; '-' reads stdin (translation runs: "
                                         "--src/--tgt instead)."),
    src: Optional[str] = PairSrcOpt,
    tgt: Optional[str] = PairTgtOpt,
    beam: Optional[int] = typer.Option(None, help="Translation run: beam search of this width (default: greedy)."),
    length_penalty: float = typer.Option(0.0, help="--beam: rank outputs by logprob / length**penalty (0: by "
                                         "logprob)."),
    fmt: Optional[str] = typer.Option(None, "--format", "-f", help="text (default: score and sacrebleu "
                                      f"signature) or {', '.join(FORMATS)}.", case_sensitive=False),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:N or auto (neural models)."),
) -> None:
    """Continuation BLEU: each line of >= 4 tokens is cut in half, the model greedily continues the first
    half (until </s> or twice the reference length) and sacrebleu scores it against the second half.
    Translation runs (--task translate): each source line is translated (until </s> or 2 x its length + 10)
    and sacrebleu scores the outputs against the raw reference lines.

    [dim]Examples:[/]
      lmkit bleu runs/kn5 corpora/shakespeare/test.txt

      lmkit bleu runs/de-en --beam 4
    """
    from . import api

    fmt = _text_format(fmt)
    report = api.bleu(model, file, src=src, tgt=tgt, beam=beam, length_penalty=length_penalty, device=device)
    summary = report.summary()
    if fmt == "text":  # sacrebleu's own line (score, 1-4-gram precisions, brevity penalty, lengths), then ours
        ratio = summary["hyp_len"] / summary["ref_len"] if summary["ref_len"] else 0.0
        typer.echo(f"BLEU = {summary['bleu']:.2f} {'/'.join(f'{p:.1f}' for p in summary['precisions'])} "
                   f"(BP = {summary['brevity_penalty']:.3f} ratio = {ratio:.3f} hyp_len = {summary['hyp_len']:d} "
                   f"ref_len = {summary['ref_len']:d})")
        typer.echo(f"{summary['lines']} line{'s' if summary['lines'] != 1 else ''} scored, {summary['short_lines']} "
                   f"left out (too short; translation: a blank side); {report.model} on {report.file}")
        typer.echo(summary["signature"])
        return
    if fmt not in ("json", "jsonl"):
        summary["protocol"] = ",".join(f"{k}={v}" for k, v in summary["protocol"].items())
        summary["precisions"] = "/".join(f"{p:.1f}" for p in summary["precisions"])
    write_record(summary, fmt, title=f"{report.model} on {report.file}")


# -- mix --------------------------------------------------------------------------------------------
@app.command(rich_help_panel="Models")
def mix(
    runs: List[Path] = typer.Argument(..., help="Two or more run folders with the same protocol, vocabulary "
                                      "and valid/test files (any families)."),
    output: Path = typer.Option(..., "-o", "--output", help="Run folder to write."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:N or auto (neural components)."),
    force: bool = typer.Option(False, "--force", help="Replace a non-empty -o folder."),
    quiet: bool = QuietOpt,
) -> None:
    """Interpolate runs of any families; weights fitted by EM on the valid file. Prints only the new run
    folder's path on stdout (the weights go to stderr); score, generate and compare read it like any run.

    [dim]Example:[/] lmkit mix runs/kn5 runs/lstm -o runs/kn5+lstm
    """
    from . import api
    from .runs import read_record

    run_dir = api.mix(runs, output, device=device, force=force, log=Messages(quiet).info)
    record = read_record(run_dir)
    weights = ", ".join(f"{c['label']} {w:.4f}" for c, w in zip(record.config["components"],
                                                                  record.fit_info["weights"]))
    n = record.fit_info["em_iterations"]
    typer.echo(f"weights: {weights} ({n} EM iteration{'' if n == 1 else 's'})", err=True)
    typer.echo(str(run_dir))


# -- export -----------------------------------------------------------------------------------------
@app.command("export-arpa", rich_help_panel="Models")
def export_arpa(
    run: Path = typer.Argument(..., help=f"Run folder of an n-gram model ({', '.join(arpa_exportable())})."),
    output: str = typer.Option(..., "-o", "--output", help="ARPA file to write (.gz compresses; '-' writes "
                               "plain ARPA text to stdout)."),
    quiet: bool = QuietOpt,
) -> None:
    """Write an n-gram model as an ARPA file that KenLM and SRILM read.

    [dim]Examples:[/]
      lmkit export-arpa runs/kn5 -o kn5.arpa

      lmkit export-arpa runs/kn5 -o - | gzip > kn5.arpa.gz
    """
    from . import api

    msgs = Messages(quiet)
    path = api.export_arpa(run, output, log=msgs.info)
    if output != "-":
        msgs.info(f"wrote {path}")


# -- check ------------------------------------------------------------------------------------------
@app.command(rich_help_panel="Experiments")
def check(
    run: Path = typer.Argument(..., help="Run folder, or an ARPA file (then give TEXTFILE)."),
    file: Optional[str] = typer.Argument(None, help="Text to check on; '-' reads stdin (default: the run's "
                                         "test file)."),
    quick: bool = typer.Option(False, "--quick", help="A smaller sample: the version `lmkit train` runs and "
                               "records in run.json."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:N or auto (neural models)."),
    fmt: Optional[str] = FormatOpt,
    wide: bool = WideOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Verify that a run's numbers can be trusted: normalisation, causality, batch invariance, save -> load.

    Exit code 1, with the failing check named on stderr, when any check fails.

    [dim]Examples:[/]
      lmkit check runs/lstm

      lmkit check runs/kn5 corpora/shakespeare/test.txt --format json
    """
    from . import api
    from .errors import LmkitError

    fmt = default_format(_check_format(fmt))
    report = api.check(run, file, quick=quick, device=device)
    rows = report.rows()
    if fmt in ("json", "jsonl"):
        rows = [{**row, "values": r.values} for row, r in zip(rows, report.results)]
    write_rows(rows, fmt, title=f"checks of {report.model} ({'quick' if quick else 'full'})", wide=wide)
    sample = report.sample
    Messages(quiet).info(f"{sample['sequences']} sequences ({sample['tokens']} tokens) of {sample['file']}, "
                         f"{report.seconds:.1f} s")
    if report.failed:
        first = report.failed[0]
        names = ", ".join(r.name for r in report.failed)
        raise LmkitError(f"{run}: check failed: {names} ({first.name}: {first.evidence})")


# -- compare and plot -------------------------------------------------------------------------------
LINEUP = "Lineup (no RUNS: train these models here)"
# the comparison's most telling columns, the most telling first: the last to go from a table too wide
COMPARE_KEEP = ("test_ppl", "bits_per_byte", "test_ppl_lo", "test_ppl_hi", "p_worse_than_best", "valid_ppl", "bleu",
                "level", "word_ppl", "diff_to_best_lo", "diff_to_best_hi", "test_ppl_excl_oov", "test_bits_per_token",
                "bits_per_char", "vocab_size", "unk_bytes")


@app.command(rich_help_panel="Experiments")
def compare(
    runs: Optional[List[Path]] = typer.Argument(None, help="Run folders to compare. None: train a lineup."),
    corpus: Optional[Path] = typer.Option(None, help="Corpus folder for the lineup (default: the bundled "
                                          "Shakespeare corpus).", rich_help_panel=LINEUP),
    models: Optional[str] = typer.Option(None, help=f"Comma-separated lineup (default: {','.join(default_lineup())}).",
                                         rich_help_panel=LINEUP),
    time_budget: Optional[str] = typer.Option(None, help="Total neural time (each run's training, validation and "
                                              "scoring), split evenly between the neural models and their --seeds "
                                              "runs (default: 60 s per neural model).",
                                              rich_help_panel=LINEUP),
    max_tokens: Optional[int] = typer.Option(None, help="Budget: training tokens per neural model.",
                                             rich_help_panel=LINEUP),
    context: Optional[str] = typer.Option(None, help=f"Protocol context for every model: sentence or stream "
                                          f"(default {defaults.CONTEXT}; translation: {defaults.TRANSLATE_CONTEXT}).",
                                          rich_help_panel=LINEUP),
    min_count: Optional[int] = typer.Option(None, help="Shared vocabulary: keep tokens seen at least this "
                                            f"often (default {defaults.MIN_COUNT}).", rich_help_panel=LINEUP),
    task: Optional[str] = typer.Option(None, help="lm or translate (parallel corpus; default: translate when "
                                       "--src/--tgt are given or the folder holds train.src + train.tgt).",
                                       rich_help_panel=LINEUP),
    src: Optional[str] = typer.Option(None, "--src", help="Parallel corpus: suffix of the source files (de).",
                                      rich_help_panel=LINEUP),
    tgt: Optional[str] = typer.Option(None, "--tgt", help="Parallel corpus: suffix of the target files (en).",
                                      rich_help_panel=LINEUP),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Folder for the lineup's run folders "
                                          "(default: runs/compare-<time>; $LMKIT_RUNS replaces runs).",
                                          rich_help_panel=LINEUP),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda, cuda:N or mps (neural models).",
                                         rich_help_panel=LINEUP),
    seed: int = typer.Option(0, help="Random seed for every model of a lineup, and for --bootstrap resampling."),
    sort: Optional[str] = typer.Option(None, help="Sort by this column (-COL: descending). "
                                       "Default: test perplexity, models that are not normalised last."),
    bleu: bool = typer.Option(False, "--bleu", help="Add continuation BLEU on each run's test file (greedy; "
                              "stored in run.json, so computed once). Translation runs always have BLEU."),
    beam: Optional[int] = typer.Option(None, "--beam", metavar="N", help="Translation runs: add beam-search "
                                       "BLEU of width N on each test pair (stored in run.json, decoded once)."),
    length_penalty: float = typer.Option(0.0, help="--beam: rank outputs by logprob / length**penalty (0: by "
                                         "logprob)."),
    bootstrap: Optional[int] = typer.Option(None, "--bootstrap", metavar="N", help="Paired bootstrap over test "
                                            "sequences, N resamples (e.g. 1000): interval of each test perplexity "
                                            "and of its difference to the best model's, from stored per-sequence "
                                            "scores (no rescoring)."),
    confidence: Optional[float] = typer.Option(None, help="--bootstrap: confidence level of the percentile "
                                               "intervals (default 0.95)."),
    text: Optional[Path] = typer.Option(None, "--text", help="Score every model given (run folders, ARPA files, "
                                        "hf:FOLDER pretrained models) on this text now, ranked by bits per byte "
                                        "(their tokenisations may differ)."),
    report_file: Optional[Path] = typer.Option(None, "--report", metavar="FILE", help="Also write the comparison "
                                               "as one self-contained HTML page (lmkit report)."),
    seeds: Optional[int] = typer.Option(None, "--seeds", metavar="K", help="Train each neural model K times "
                                        "(seeds SEED..SEED+K-1, sharing its part of --time-budget) and show the "
                                        "mean ± sample sd over seeds; n-grams are deterministic and train once.",
                                        rich_help_panel=LINEUP),
    fmt: Optional[str] = FormatOpt,
    wide: bool = WideOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Compare runs side by side; refused unless they share protocol, vocabulary and test file.

    [dim]Examples:[/]
      lmkit compare runs/kn5 runs/lstm runs/tf

      lmkit compare                      # the default lineup on the bundled corpus (about 5 minutes)

      lmkit compare --corpus ptb --models ngram:kn5,lstm --time-budget 20m -o runs/ptb

      lmkit compare --corpus multi30k --src de --tgt en --models ngram:kn5,lstm,transformer

      lmkit compare runs/* --bleu        # add continuation BLEU to every run

      lmkit compare runs/m30k/* --beam 5 # translation runs: add beam-search BLEU

      lmkit compare runs/* --bootstrap 1000 --seed 1   # 95% paired-bootstrap intervals

      lmkit compare --models lstm,transformer --seeds 3 --time-budget 3m   # mean ± sd over 3 seeds

      lmkit compare runs/kn5 runs/bpe-tf hf:models/gpt2 --text corpora/shakespeare/test.txt

      lmkit compare --report report.html # the default lineup, then its page

      lmkit compare runs/* --format json | jq -r '.[] | [.model, .test_ppl] | @tsv'
    """
    from . import api
    from .compare import DEFAULT_CONFIDENCE, TABLE_VIEW, table_view
    from .runs import run_folders

    fmt = default_format(_check_format(fmt))
    lineup = [m.strip() for m in models.split(",") if m.strip()] if models is not None else None
    if report_file is not None:
        from .report import check_report_output

        if text is not None:
            raise UsageError("--report draws a page of run folders; --text scores models on a text now (no run "
                             "folders to report on)")
        check_report_output(report_file, runs or [])  # before any training: a bad path costs nothing
    if text is not None:
        others = [flag for flag, value in (("--corpus", corpus), ("--models", models), ("--time-budget", time_budget),
                                           ("--max-tokens", max_tokens), ("--bootstrap", bootstrap),
                                           ("--seeds", seeds), ("--beam", beam), ("--context", context))
                  if value is not None] + (["--bleu"] if bleu else [])
        if others:
            raise UsageError(f"--text scores the given models on one text now; {', '.join(others)} cannot be "
                             "combined with it")
        rows = api.compare_text([str(r) for r in runs or []], text, sort=sort, device=device or "auto")
    else:
        runs = run_folders(runs, log=Messages(quiet).info) if runs else None  # a lineup folder: its runs, noted
        rows = api.compare(runs, corpus=corpus, models=lineup, time_budget=time_budget, max_tokens=max_tokens,
                           context=context, min_count=min_count, sort=sort, runs_dir=output, device=device,
                           seed=seed, task=task, src=src, tgt=tgt, log=Messages(quiet).info, progress=not quiet,
                           bleu=bleu, bootstrap=bootstrap, confidence=confidence, seeds=seeds, beam=beam,
                           length_penalty=length_penalty)
    if fmt == "table":
        display, columns, highlight = table_view(rows)
        level = DEFAULT_CONFIDENCE if confidence is None else confidence
        title = "comparison" if bootstrap is None else (f"comparison ({level:.0%} paired bootstrap intervals, "
                                                        f"{bootstrap} resamples, seed {seed})")
        if seeds is not None and seeds > 1:
            title += f" -- neural models: mean ± sd over {seeds} seeds"
        keep = [TABLE_VIEW[c][0] for c in COMPARE_KEEP]  # at 80 columns: the rest is left out first
        write_rows(display, fmt, columns=columns, highlight=highlight, title=title, wide=wide, keep=keep)
    else:
        write_rows(rows, fmt)
    if report_file is not None:
        msgs = Messages(quiet)
        start = time.perf_counter()
        path = api.report([r["run"] for r in rows], report_file, rows=rows, bootstrap=bootstrap,
                          confidence=confidence, seed=seed, device=device or "cpu", command=sys.argv, log=msgs.info)
        msgs.info(f"wrote {path} ({time.perf_counter() - start:.1f} s after the comparison)")


@app.command(rich_help_panel="Experiments")
def report(
    runs: List[Path] = typer.Argument(..., help="Run folders to report on (a lineup or curve folder stands for "
                                      "its runs)."),
    output: Path = typer.Option(..., "-o", "--output", help="The HTML file to write (one self-contained page)."),
    bootstrap: Optional[int] = typer.Option(None, "--bootstrap", metavar="N", help="Add paired-bootstrap "
                                            "intervals (N resamples) to the table and as error bars."),
    confidence: Optional[float] = typer.Option(None, help="--bootstrap: confidence level (default 0.95)."),
    seed: int = typer.Option(0, help="Seed of the bootstrap resampling and of the generated samples."),
    samples: int = typer.Option(3, help="Generated samples per model, the same prompts for every model (0: none)."),
    analysis: Optional[bool] = typer.Option(None, "--analysis/--no-analysis", help="Show where each model wins "
                                            "(lmkit analyze's buckets; default: on)."),
    device: str = typer.Option("cpu", help="Where neural runs are rescored and sampled: cpu, auto, cuda[:N]."),
    quiet: bool = QuietOpt,
) -> None:
    """Write one self-contained HTML page of comparable runs: the compare table (sortable), protocol,
    learning curves, intervals, where each model wins, samples, costs, checks and provenance. It opens
    offline in any browser and prints; runs that compare refuses are refused the same way.

    [dim]Examples:[/]
      lmkit report runs/* -o report.html

      lmkit report runs/m30k/* --bootstrap 1000 -o m30k.html
    """
    from . import api

    msgs = Messages(quiet)
    start = time.perf_counter()
    path = api.report(runs, output, bootstrap=bootstrap, confidence=confidence,
                      seed=seed, samples=samples, analysis=analysis is not False, device=device, command=sys.argv,
                      log=msgs.info)
    msgs.info(f"wrote {path} ({time.perf_counter() - start:.1f} s)")


@app.command(rich_help_panel="Experiments")
def plot(
    runs: List[Path] = typer.Argument(..., help="Run folders whose learning curves to draw."),
    output: Path = typer.Option(..., "-o", "--output", help="Image to write (.png, .svg or .pdf; '-' writes "
                                "a PNG to stdout)."),
    quiet: bool = QuietOpt,
) -> None:
    """Valid perplexity against tokens seen and against training time (needs matplotlib). A folder of run
    folders (a lineup written by `lmkit compare`) stands for its runs.

    [dim]Examples:[/]
      lmkit plot runs/compare-*/* -o curves.png

      lmkit plot runs/* -o curves.png
    """
    from . import api
    from .runs import run_folders

    msgs = Messages(quiet)
    path = api.plot(run_folders(runs, log=msgs.info), output, log=msgs.warn)
    if str(output) != "-":
        msgs.info(f"wrote {path}")


@app.command(rich_help_panel="Experiments")
def analyze(
    runs: List[Path] = typer.Argument(..., help="Run folders with the same protocol, vocabulary and test file."),
    by: Optional[str] = typer.Option(None, "--by", help="Comma-separated breakdowns: context-frequency, length, "
                                     "oov (default: all three)."),
    order: int = typer.Option(3, "--order", help="context-frequency: the history is the n-1 tokens before the "
                              "target (3: two words)."),
    text: Optional[str] = typer.Option(None, "--text", help="Analyse this text instead of the runs' test file "
                                       "('-' reads stdin)."),
    train_file: Optional[str] = typer.Option(None, "--train", help="Count context frequencies in this file "
                                             "(default: the train file recorded in run.json, refused if missing "
                                             "or changed)."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:N or auto (neural models)."),
    fmt: Optional[str] = FormatOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Where each family wins: per-token NLL of several runs on one test file, by train frequency of the
    token's history (unseen / 1 / 2-9 / 10+), line length and OOV, with the best run per bucket.
    The total row is each run's perplexity on the whole file. json: one object; tsv/csv/jsonl: one table
    with a 'by' column; table/markdown: one rounded table per breakdown.

    [dim]Examples:[/]
      lmkit analyze runs/kn5 runs/lstm --by context-frequency,length,oov

      lmkit analyze runs/kn5 runs/lstm --order 5 --format json
    """
    from . import api

    fmt = default_format(_check_format(fmt))
    msgs = Messages(quiet)
    result = api.analyze(runs, by, order=order, text=text, train=train_file, device=device, log=msgs.info)
    if fmt == "json":
        write_record(result.to_dict(), fmt)
    elif fmt == "jsonl":
        write_rows([{"by": d, **b} for d in result.dimensions for b in result.buckets(d)], fmt)
    elif fmt in ("tsv", "csv"):
        write_rows([{"by": d, **row} for d in result.dimensions for row in result.rows(d)], fmt)
    else:
        for i, d in enumerate(result.dimensions):
            if fmt == "markdown":
                typer.echo(f"{'' if i == 0 else chr(10)}**{result.title(d)}**\n")
                write_rows(result.display_rows(d), fmt)  # for documents: rounded as in the table
            else:
                write_rows(result.display_rows(d), fmt, title=result.title(d))
    t = result.text
    counted = f"; context frequencies from {result.train['path']}" if "context-frequency" in result.dimensions else ""
    msgs.info(f"{t['tokens']:,} scored tokens ({t['oov']:,} <unk>) of {t['path']}{counted}")


CURVE = "Learning curve"


@app.command(rich_help_panel="Experiments")
def curve(
    corpus: Optional[Path] = typer.Option(None, help="Corpus folder with train, valid and test files (default: "
                                          "the bundled Shakespeare corpus)."),
    models: Optional[str] = typer.Option(None, help="Comma-separated models (default: ngram:kn5,lstm)."),
    fractions: Optional[str] = typer.Option(None, help="Comma-separated fractions of the train split in (0, 1] "
                                            "(default: 0.01,0.1,1); nested: each is a prefix of the next."),
    epochs: Optional[float] = typer.Option(None, help="Budget per neural run: passes over its own fraction "
                                           "(the natural learning-curve budget).", rich_help_panel=CURVE),
    max_tokens: Optional[int] = typer.Option(None, help="Budget per neural run: training tokens.",
                                             rich_help_panel=CURVE),
    time_budget: Optional[str] = typer.Option(None, help="Budget per neural run: wall time, e.g. 90s, 5m "
                                              "(default 60s when no budget is given).", rich_help_panel=CURVE),
    context: str = typer.Option(defaults.CONTEXT, help="Protocol context for every run: sentence or stream.",
                                rich_help_panel=CURVE),
    level: str = typer.Option(defaults.LEVEL, help="word, char, bpe or unigram.", rich_help_panel=CURVE),
    min_count: int = typer.Option(defaults.MIN_COUNT, help="Shared vocabulary (from the full train split): keep "
                                  "tokens seen at least this often.", rich_help_panel=CURVE),
    sets: List[str] = typer.Option([], "--set", help="KEY=VALUE for every neural model, FAMILY.KEY=VALUE for one "
                                   "(e.g. lstm.hidden=256, lr=3e-3); repeatable.", rich_help_panel=CURVE),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda, cuda:N or mps (neural models).",
                                         rich_help_panel=CURVE),
    seed: int = typer.Option(0, help="Random seed of every run."),
    runs_dir: Optional[Path] = typer.Option(None, "--runs-dir", help="Folder for the run folders, the vocabulary "
                                            "and the fractions' train files (default: runs/curve-<time>; "
                                            "$LMKIT_RUNS replaces runs)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Also draw test perplexity vs training "
                                          "tokens into this image (.png, .svg or .pdf; needs matplotlib)."),
    fmt: Optional[str] = FormatOpt,
    wide: bool = WideOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Learning curves: train models on nested fractions of the train split, score each on the full test split.

    One vocabulary (full train split) and one protocol for all runs; each training set is a prefix of the next.

    [dim]Examples:[/]
      lmkit curve --corpus ptb --models ngram:kn5,lstm --fractions 0.01,0.1,1 -o curve.png

      lmkit curve --models ngram:kn3,ngram:kn5 --fractions 0.1,0.3,1 --format json

      lmkit curve --models ngram:kn5,lstm --epochs 3 --set lstm.layers=2 --set lstm.hidden=256 -o curve.png
    """
    from . import api
    from .curve import table_view

    fmt = default_format(_check_format(fmt))
    msgs = Messages(quiet)
    lineup = [m.strip() for m in models.split(",") if m.strip()] if models else None
    rows = api.curve(corpus, lineup, fractions, time_budget=time_budget, max_tokens=max_tokens, epochs=epochs,
                     context=context, level=level, min_count=min_count, sets=sets, device=device, seed=seed,
                     runs_dir=runs_dir, image=output, log=msgs.info, progress=not quiet)
    if fmt == "table":
        display, columns = table_view(rows)
        write_rows(display, fmt, columns=columns, title="learning curve", wide=wide)
    else:
        write_rows(rows, fmt)


@app.command(rich_help_panel="Experiments")
def verify(
    quick: bool = typer.Option(False, "--quick", help="Only the quick cases (seconds, no data): hand-computed "
                               "probabilities, nltk.lm and sacrebleu agreement, char-level and perplexity "
                               "arithmetic."),
    corpus: Optional[Path] = typer.Option(None, help="The PTB folder: adds the full cases (KN5/KN3 vs published "
                                          "and KenLM numbers; LSTM and Transformer recipes, ~12 min each)."),
    reference: Optional[Path] = typer.Option(None, help="KenLM's tiny-shakespeare reference folder (default: "
                                             "../shared/reference/kenlm/tinyshakespeare when present)."),
    case: List[str] = typer.Option([], "--case", help="Only this case (repeatable; globs such as 'ptb-kn*')."),
    skip_neural: bool = typer.Option(False, "--skip-neural", help="Leave out the LSTM and Transformer cases."),
    list_: bool = typer.Option(False, "--list", help="Print the registry (sources, protocols, tolerances) "
                               "without running anything."),
    keep: Optional[Path] = typer.Option(None, "--keep", help="Keep the cases' run folders in this (new or "
                                        "empty) folder instead of a temporary one."),
    fmt: Optional[str] = FormatOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Check lmkit's numbers against references it does not compute itself; prints a pass/fail table.

    Exit code 1, after the table, when any case fails. Without --corpus only the quick cases run.

    [dim]Examples:[/]
      lmkit verify --quick

      lmkit verify --corpus ptb --skip-neural

      lmkit verify --corpus ptb --case 'ptb-kn*' --format json

      lmkit verify --list
    """
    from . import api
    from .errors import LmkitError

    fmt = default_format(_check_format(fmt))
    if list_:
        rows = api.verify_cases(corpus=corpus, reference=reference, cases=case or None, skip_neural=skip_neural)
        write_rows(rows, fmt, title=f"lmkit verify: {len(rows)} cases")
        return
    report = api.verify(quick=quick, corpus=corpus, reference=reference, cases=case or None,
                        skip_neural=skip_neural, keep=keep, log=Messages(quiet).info, progress=not quiet)
    rows = report.rows(numbers=fmt in ("json", "jsonl"))
    if fmt == "table":  # passing cases' notes are details: the table shows failures' reasons only
        rows = [row if row["status"] == "fail" else {k: v for k, v in row.items() if k != "note"} for row in rows]
    passed = len(rows) - len(report.failed)
    write_rows(rows, fmt, title=f"lmkit verify: {passed} of {len(rows)} cases passed")
    if report.failed:
        first = report.failed[0]
        names = ", ".join(r.case.name for r in report.failed)
        why = [first.note] if first.note else []
        if first.measured is not None and first.expected is not None:
            why.insert(0, f"measured {first.measured:.6g}, expected {first.expected:.6g}")
        raise LmkitError(f"{len(report.failed)} of {len(rows)} verify cases failed: {names} "
                         f"({first.case.name}: {'; '.join(why)})")


# -- corpus -----------------------------------------------------------------------------------------
corpus_app = _typer(help="Known corpora: list, download into the cache, print their folder; split a raw file.")
app.add_typer(corpus_app, name="corpus", rich_help_panel="Data")


def _human_bytes(n: Optional[int]) -> str:
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


@corpus_app.command("list")
def corpus_list(fmt: Optional[str] = FormatOpt) -> None:
    """Known corpora: name, sizes, how downloads are verified, licence, source, and whether it is cached.

    [dim]Examples:[/]
      lmkit corpus list

      lmkit corpus list --format json
    """
    from . import api

    fmt = default_format(_check_format(fmt))
    rows = api.corpus_list()
    if fmt == "table":
        rows = [{"name": r["name"], "download": _human_bytes(r["download_bytes"]),
                 "size": ("" if r["size_exact"] else "~") + _human_bytes(r["size_bytes"]),
                 "checksum": r["checksum"], "licence": r["licence"], "origin": r["origin"],
                 "cached": "yes" if r["cached"] else "no"} for r in rows]
        write_rows(rows, fmt, title="known corpora (lmkit corpus download NAME)")
    else:
        write_rows(rows, fmt)


@corpus_app.command("download")
def corpus_download(
    names: List[str] = typer.Argument(..., help="Corpus name(s) from `lmkit corpus list`."),
    offline: bool = typer.Option(False, "--offline", help="Never use the network (also env LMKIT_OFFLINE=1): "
                                 "succeed only if already downloaded."),
    force: bool = typer.Option(False, "--force", help="Download again and replace the cached copy."),
    mirror: Optional[str] = typer.Option(None, "--mirror", help="Fetch <MIRROR>/<name>/<file> instead of the "
                                         "upstream URLs (also env LMKIT_CORPUS_MIRROR; http, https or file URL)."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Seconds without data before a connection "
                                            "is abandoned (default 30)."),
    quiet: bool = QuietOpt,
) -> None:
    """Download, verify (size + sha256) and unpack a corpus into the cache; prints its folder.

    Resumes an interrupted download; a corpus folder appears only once complete and verified.

    [dim]Examples:[/]
      lmkit corpus download wikitext-2

      lmkit corpus download ptb --offline

      lmkit train --model ngram:kn3 --corpus wikitext-2
    """
    from . import api

    msgs = Messages(quiet)
    for name in names:
        path = api.corpus_download(name, offline=offline or None, force=force, mirror=mirror, timeout=timeout,
                                   log=msgs.info, progress=not quiet)
        typer.echo(str(path))


@corpus_app.command("path")
def corpus_path(name: str = typer.Argument(..., help="Corpus name from `lmkit corpus list`.")) -> None:
    """Print the cached folder of a downloaded corpus (for shell pipelines).

    [dim]Example:[/] wc -l $(lmkit corpus path ptb)/*.txt
    """
    from . import api

    typer.echo(str(api.corpus_path(name)))


@corpus_app.command("split")
def corpus_split(
    source: str = typer.Argument(..., help="Raw text file to split ('-' reads stdin, with --by line)."),
    output: Path = typer.Option(..., "-o", "--output", help="Corpus folder to create (train.txt, valid.txt, "
                                "test.txt)."),
    ratios: str = typer.Option("98/1/1", "--ratios", help="train/valid/test shares, summing to 100 (or 1)."),
    by: str = typer.Option("contiguous", "--by", help="contiguous: blocks of lines in file order (PTB/WikiText "
                           "convention); line: each line placed by a seeded hash of its text."),
    seed: int = typer.Option(0, "--seed", help="Seed of the --by line hash."),
    force: bool = typer.Option(False, "--force", help="Replace an existing non-empty output folder."),
    fmt: Optional[str] = FormatOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Split one raw text file into train/valid/test files, deterministically; prints lines/tokens per split.

    [dim]Examples:[/]
      lmkit corpus split my.txt --ratios 98/1/1 -o corpora/mine

      lmkit corpus split my.txt --ratios 80/10/10 --by line --seed 1 -o corpora/mine-shuffled
    """
    from . import api

    fmt = default_format(_check_format(fmt))
    rows = api.corpus_split(source, output, ratios, by=by, seed=seed, force=force)
    msgs = Messages(quiet)
    for row in rows[1:]:
        if row["file"] and row["lines"] == 0:
            msgs.warn(f"the {row['split']} split is empty (too few lines for --ratios {ratios})")
    write_rows(rows, fmt, title=f"{output}")


# -- encode -----------------------------------------------------------------------------------------
@app.command(rich_help_panel="Data")
def encode(
    corpus: Optional[Path] = typer.Option(None, help="Corpus folder with train, valid and test files."),
    vocab: Optional[Path] = typer.Option(None, help="Vocabulary whose ids the token files hold (required)."),
    splits: Optional[str] = typer.Option(None, help="Splits to encode, comma-separated, e.g. train,valid,test "
                                         "(default: every split found)."),
    train_file: Optional[str] = typer.Option(None, "--train", help="Training file (overrides --corpus)."),
    valid_file: Optional[str] = typer.Option(None, "--valid", help="Validation file."),
    test_file: Optional[str] = typer.Option(None, "--test", help="Test file."),
    context: str = typer.Option(defaults.CONTEXT, help="Protocol context: sentence or stream (the ids are the same; "
                                "one token file serves both)."),
    keep_blank_lines: bool = typer.Option(False, help="Keep blank lines as empty sequences (a separate token "
                                          "file: runs must use the same setting to find it)."),
    fmt: Optional[str] = FormatOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Encode a corpus once into memory-mapped token files in the cache; train and score then stream from them.

    [dim]Examples:[/]
      lmkit encode --corpus ptb --vocab vocab.json

      lmkit train --model lstm --corpus ptb --vocab vocab.json   # "tokens: reusing ..."
    """
    from . import api

    fmt = default_format(_check_format(fmt))
    rows = api.encode_corpus(corpus, vocab, train=train_file, valid=valid_file, test=test_file, splits=splits,
                             context=context, keep_blank_lines=keep_blank_lines, log=Messages(quiet).info)
    write_rows([r.row() for r in rows], fmt, title="token files")


def main() -> None:
    """Console-script entry point."""
    if os.environ.get("NO_COLOR"):
        os.environ.setdefault("TERM", "dumb")
    signal.signal(signal.SIGTERM, on_sigterm)  # unwind like Ctrl-C: locks released, temps removed, exit 143
    prefer_small_pages()
    app(prog_name="lmkit")


if __name__ == "__main__":
    main()
