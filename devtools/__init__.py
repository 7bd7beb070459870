"""Development tools: Redis servers for the tests, the sample's run command and the benchmark.

Nothing in this package is part of the installed library.
"""
