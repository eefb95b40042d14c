"""Applications built on the library, above the pipeline: `argen bench` (``bench.py``, its measurements and report),
`argen demo` (``demo.py``) and sampling a model to files (``sampling_files.py``, what `argen sample` writes).
`argen serve` is the other application, in ``argen/serve/``. Nothing here imports ``argen.commands``: the commands
parse flags and call these."""
