"""Pure rules shared by both paths, with no I/O: decoding a message into a document, filters, naming,
batching, the dead-letter record and the classification of errors. Unit-tested without servers."""
