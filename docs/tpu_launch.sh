#!/usr/bin/env bash
# Launch SSA training on a Cloud TPU VM pod slice (v4 or v5e). See docs/tpu.md.
# NOT RUN by the authors of this script on real hardware (no TPU access): every command is the
# documented gcloud usage, checked for syntax only.
#
#   docs/tpu_launch.sh create | setup | data | train | status | stop | delete
#
# Settings (environment variables):
#   TPU_NAME=ssa-v4-32  ZONE=us-central2-b  ACCEL=v4-32  RUNTIME=tpu-ubuntu2204-base
#   BUCKET=gs://my-bucket  CONFIG=configs/gpt2_124m_pretrain.py  RUN=gpt2-ssa  EXTRA="--config.ssa.strategy=vanilla"
# v5e example: ACCEL=v5litepod-16 ZONE=us-west4-a RUNTIME=v2-alpha-tpuv5-lite
set -euo pipefail

TPU_NAME=${TPU_NAME:-ssa-v4-32}
ZONE=${ZONE:-us-central2-b}
ACCEL=${ACCEL:-v4-32}
RUNTIME=${RUNTIME:-tpu-ubuntu2204-base}
BUCKET=${BUCKET:?set BUCKET=gs://your-bucket}
CONFIG=${CONFIG:-configs/gpt2_124m_pretrain.py}
RUN=${RUN:-gpt2-ssa}
EXTRA=${EXTRA:-}
REPO_DIR='~/ssa'
SSH=(gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all)

case "${1:-}" in
  create)
    gcloud compute tpus tpu-vm create "$TPU_NAME" --zone="$ZONE" \
        --accelerator-type="$ACCEL" --version="$RUNTIME"
    ;;
  setup)
    # Copy this checkout (without venvs/caches) to every worker, then install the pinned deps.
    tar --exclude=.venv --exclude=.git --exclude='__pycache__' -czf /tmp/ssa_src.tgz .
    gcloud compute tpus tpu-vm scp /tmp/ssa_src.tgz "$TPU_NAME":/tmp/ssa_src.tgz \
        --zone="$ZONE" --worker=all
    "${SSH[@]}" --command="mkdir -p $REPO_DIR && tar -xzf /tmp/ssa_src.tgz -C $REPO_DIR && \
        cd $REPO_DIR && python3 -m venv .venv && \
        .venv/bin/pip install -q -r requirements.txt 'jax[tpu]==0.10.2'"
    ;;
  data)
    # Prepare the tfds dataset ONCE (here: on worker 0) directly into the bucket; all workers
    # then read gs://.../tensorflow_datasets (array_record, no TensorFlow needed at run time).
    gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=0 --command="\
        cd $REPO_DIR && .venv/bin/python -c \"
from configs import base; import importlib; from ssa import data
c = importlib.import_module('${CONFIG%.py}'.replace('/', '.')).get_config()
c.data.tfds_data_dir = '$BUCKET/tensorflow_datasets'
data.make_eval_iterator(c, 0, 1, num_batches=1)
print('prepared', c.data.dataset)\""
    ;;
  train)
    # The SAME command on every worker; --multihost calls jax.distributed.initialize(), which
    # finds the coordinator from the TPU metadata. Logs go to ~/ssa_train.log on each worker.
    "${SSH[@]}" --command="cd $REPO_DIR && nohup .venv/bin/python train.py --multihost \
        --config=$CONFIG --workdir=$BUCKET/runs/$RUN \
        --config.data.tfds_data_dir=$BUCKET/tensorflow_datasets --config.data.tfds_download=False \
        $EXTRA > ~/ssa_train.log 2>&1 &"
    ;;
  status)
    gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=0 \
        --command="tail -n 5 ~/ssa_train.log"
    ;;
  stop)
    # SIGTERM: every process saves a checkpoint at its next log step and exits 0.
    "${SSH[@]}" --command="pkill -TERM -f 'train.py --multihost' || true"
    ;;
  delete)
    gcloud compute tpus tpu-vm delete "$TPU_NAME" --zone="$ZONE" --quiet
    ;;
  *)
    sed -n '2,14p' "$0"; exit 1
    ;;
esac
