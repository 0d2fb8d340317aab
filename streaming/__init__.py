"""PyFlink jobs: thin entry points that wire Kafka sources and sinks around plain Python logic."""
