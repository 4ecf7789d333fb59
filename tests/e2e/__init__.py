"""End-to-end tests: server processes, CLI subprocesses, the real DataRobot client, fuzzing and the benchmark."""
