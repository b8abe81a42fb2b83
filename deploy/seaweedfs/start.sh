#!/bin/sh
# One identity, mlprod's, from the environment; anonymous requests are refused. The bucket is
# made on the first write of that identity (the API's start-up check), so nothing else is needed.
set -eu
: "${ML_S3_ACCESS_KEY_ID:?set ML_S3_ACCESS_KEY_ID}"
: "${ML_S3_SECRET_ACCESS_KEY:?set ML_S3_SECRET_ACCESS_KEY}"
umask 077
cat > /tmp/s3.json <<JSON
{"identities": [{"name": "mlprod",
  "credentials": [{"accessKey": "${ML_S3_ACCESS_KEY_ID}", "secretKey": "${ML_S3_SECRET_ACCESS_KEY}"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
JSON
exec weed server -ip="$(hostname)" -ip.bind=0.0.0.0 -dir=/data -s3 -s3.port=8333 \
  -s3.config=/tmp/s3.json -s3.port.iceberg=0 -s3.port.lance=0 -master.volumeSizeLimitMB=1024
