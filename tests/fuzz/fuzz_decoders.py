"""Coverage-guided fuzzing of every decoder with atheris: any input gives a document or a DataError.

Run from the repository root (atheris is not a test dependency: `pip install atheris` first):

    .venv/bin/python tests/fuzz/fuzz_decoders.py -max_total_time=180 -max_len=4096

A crash (any other exception, or a document the BSON encoder refuses) stops the run and writes the input to
a `crash-*` file. The result of the last run is recorded in docs/delivery-semantics.md.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    import bson

    from pipeline.core.codec import DataError, TickSchema, decode_raw, make_document, make_tick_decoder
    from pipeline.core.timefmt import EPOCH

DECODERS = (make_tick_decoder(TickSchema()), decode_raw)


def one_input(data: bytes) -> None:
    for decode in DECODERS:
        try:
            fields = decode(data)
        except DataError:
            continue
        bson.encode(make_document(fields, "t", 0, 0, 0, None, EPOCH))


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
