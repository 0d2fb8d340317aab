#!/usr/bin/env bash
# Submit streamtrain's Flink job(s) to a running Flink cluster with `flink run -py`.
#   scripts/flink_submit.sh --jobmanager host:8081 --kafka broker:9092 [--job passthrough] [-- extra --set args]
# The cluster needs Python 3.11 with apache-flink 2.2.x on every TaskManager (see
# infra/docker/flink.Dockerfile); the Kafka connector jar is shipped with --jarfile unless
# it already sits in the cluster's lib/. The repository is shipped with -pyfs.
set -euo pipefail
cd "$(dirname "$0")/.."
JM=localhost:8081
KAFKA=localhost:9092
JOB=join
while [ $# -gt 0 ]; do
  case "$1" in
    --jobmanager) JM=$2; shift 2 ;;
    --kafka) KAFKA=$2; shift 2 ;;
    --job) JOB=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
case "$JOB" in
  passthrough) PY=streaming/passthrough_job.py ;;
  join) PY=streaming/joiner/job.py ;;
  *) echo "unknown job $JOB (passthrough | join)" >&2; exit 2 ;;
esac
FLINK=${FLINK_HOME:+$FLINK_HOME/bin/}flink
JAR=$(ls infra/jars/flink/flink-sql-connector-kafka-*.jar 2>/dev/null | tail -n 1 || true)
JARARGS=()
if [ -n "$JAR" ]; then JARARGS=(--jarfile "$JAR"); fi
exec "$FLINK" run -m "$JM" -d -py "$PY" -pyfs . "${JARARGS[@]}" \
  --no-jar --set "kafka.bootstrap=$KAFKA" "$@"
