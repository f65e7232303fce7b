"""Verification support: reference models that engines are checked against (tests and comparison scripts).

Nothing here is needed to build or run engines; each reference imports its own model code (e.g. the
`yolov5` package) only when called.
"""
