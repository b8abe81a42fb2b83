#!/usr/bin/env sh
# Write secrets/*.env for this overlay: random passwords (hex: they go into URLs) and the URLs
# and Redis users that hold them, so that each pair agrees. Leaves existing files alone (delete
# secrets/ to start again). ML_CLIENT_USERS (name:argon2-hash, docs/deploy.md step 2) and
# ML_CLIENT_API_KEY (step 5) come from the environment; set them later in secrets/client.env.
#   ML_CLIENT_USERS='alice:$argon2id$...' ./make-secrets.sh
set -eu
cd "$(dirname "$0")"
[ -e secrets/api.env ] && { echo "secrets/ exists: left as it is"; exit 0; }
hex() { od -An -N32 -tx1 /dev/urandom | tr -d ' \n'; }
rabbit=$(hex) admin=$(hex) api=$(hex) worker=$(hex) client=$(hex) key=$(hex)
broker="amqp://mlprod:$rabbit@rabbitmq:5672//"
umask 077
mkdir -p secrets
cat >secrets/api.env <<ENV
ML_BROKER_URL=$broker
ML_RESULT_BACKEND=redis://mlprod-api:$api@redis:6379/0
ML_SECRET_KEY=$key
ENV
cat >secrets/worker.env <<ENV
ML_BROKER_URL=$broker
ML_RESULT_BACKEND=redis://mlprod-worker:$worker@redis:6379/0
ML_SECRET_KEY=$key
ENV
cat >secrets/client.env <<ENV
ML_RESULT_BACKEND=redis://mlprod-client:$client@redis:6379/0
ML_SECRET_KEY=$key
ML_CLIENT_USERS=${ML_CLIENT_USERS:-}
ML_CLIENT_API_KEY=${ML_CLIENT_API_KEY:-}
ENV
cat >secrets/redis.env <<ENV
REDIS_PASSWORD=$admin
REDIS_API_PASSWORD=$api
REDIS_WORKER_PASSWORD=$worker
REDIS_CLIENT_PASSWORD=$client
ENV
cat >secrets/rabbitmq.env <<ENV
RABBITMQ_DEFAULT_USER=mlprod
RABBITMQ_DEFAULT_PASS=$rabbit
ENV
# KEDA's operator runs in another namespace: the broker's full name
cat >secrets/keda.env <<ENV
host=amqp://mlprod:$rabbit@rabbitmq.mlprod.svc:5672/%2f
ENV
echo "wrote $(pwd)/secrets/"
