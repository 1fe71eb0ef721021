"""The benchmark suite's sections (run by `bench/suite.py`), one module each: growth,
latency, throughput, streams, replay, cost; `peers` holds LangGraph's documented chatbot
pattern they are compared with, `common` what they share."""
