"""`make bench`: the suite against a one-process baseline, loaded from a separate process on loopback.

Modules: stack (the suite's processes and the baseline, started like the tests start them), baseline
(the monolith stand-in), load (the load generator, its own process), seed (bulk scheduling data),
report (the table). `python -m tools.bench` runs it all and prints one table.
"""
