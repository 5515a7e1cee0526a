#!/bin/sh
# LocalStack "ready" hook: create every table, index, queue and consumer group, idempotently.
set -e
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
export WORLDLAND_DYNAMODB_ENDPOINT=http://localhost:4566
export WORLDLAND_SQS_ENDPOINT=http://localhost:4566
export WORLDLAND_BUS=sqs
export WORLDLAND_REDIS_URL=redis://redis:6379
export WORLDLAND_AMQP_URL=amqp://guest:guest@rabbitmq:5672/%2f
worldland infra init
