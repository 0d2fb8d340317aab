#!/usr/bin/env bash
# Submit streamtrain's Flink jobs to a running Flink cluster with `flink run -py`: a thin
# wrapper of `streamtrain submit` (streamtrain/cli/flink.py), which runs PyFlink's bundled
# `flink run -d -py <job module> -pyexec <python> -j <connector jar> [-s <savepoint>]`.
#   scripts/flink_submit.sh --jobmanager host:8081 --kafka broker:9092 [--job all|features|join]
#                           [--savepoint PATH] [-- more job flags, e.g. --set joiner_job.checkpoint_dir=s3://...]
# `all` (the default) submits the feature job, then the joiner on its outputs
# (impressions-enriched, actions-deduped). The cluster's TaskManagers need this package and
# its Python (docs/deploy.md); the connector jar travels with the job.
set -euo pipefail
cd "$(dirname "$0")/.."
JM=localhost:8081
KAFKA=localhost:9092
JOB=all
SAVEPOINT=()
while [ $# -gt 0 ]; do
  case "$1" in
    --jobmanager) JM=$2; shift 2 ;;
    --kafka) KAFKA=$2; shift 2 ;;
    --job) JOB=$2; shift 2 ;;
    --savepoint) SAVEPOINT=(--savepoint "$2"); shift 2 ;;
    --) shift; break ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
ST=${STREAMTRAIN:-$( [ -x .venv/bin/streamtrain ] && echo .venv/bin/streamtrain || echo streamtrain )}
COMMON=(--set "flink_cluster.host=${JM%:*}" --set "flink_cluster.rest_port=${JM##*:}"
        --set "kafka.bootstrap=$KAFKA")
JOIN_TOPICS=(--set topics.impressions=impressions-enriched --set topics.actions=actions-deduped)
case "$JOB" in
  features) exec "$ST" submit features "${SAVEPOINT[@]}" "${COMMON[@]}" "$@" ;;
  join) exec "$ST" submit join "${SAVEPOINT[@]}" "${COMMON[@]}" "${JOIN_TOPICS[@]}" "$@" ;;
  all) "$ST" submit features "${COMMON[@]}" "$@"
       exec "$ST" submit join "${COMMON[@]}" "${JOIN_TOPICS[@]}" "$@" ;;
  *) echo "unknown job $JOB (all | features | join)" >&2; exit 2 ;;
esac
