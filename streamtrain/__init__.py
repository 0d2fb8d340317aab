"""streamtrain's ground floor and its command line.

The ground (importable by every stage, imports no stage): :mod:`streamtrain.config`
(config loading), :mod:`streamtrain.flags` (``--config``/``--set`` parsing),
:mod:`streamtrain.kafka_io` (Kafka clients and helpers), :mod:`streamtrain.local_kafka`
(the local broker), :mod:`streamtrain.paths`, :mod:`streamtrain.logs` (logging setup) and
:mod:`streamtrain.clock`.

The top floor: :mod:`streamtrain.cli` (the console script, the demo), which only the
``streamtrain`` entry point imports.
"""
