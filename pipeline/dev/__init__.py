"""For demos, tests and benchmarks, never on the worker's path: the local test servers, the tick simulator
and the demo."""
