"""One folder per control-model family: ``model.py`` (the module, keeping ``family.ControlModel``) and
``format.py`` (``claims``, ``build`` and its ``FORMATS`` rows), plus blocks, converters and hints as needed."""
