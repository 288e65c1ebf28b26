"""The pipeline layer: one train request resolved, fitted, measured and written; trained models used.

request -> prepare -> fit (-> measure) and use; docs/architecture.md maps the layers."""
