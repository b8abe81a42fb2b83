"""Celery configuration built from Settings, shared by the worker and the API's producer.

Plain dicts only: importing this module does not import Celery.
"""

from __future__ import annotations

from typing import Any

from ml_common.settings import Settings


def task_priority(broker_url: str, *, bulk: bool) -> int:
    """The message priority of a detect task: a batch item (`bulk`) goes after single uploads.

    RabbitMQ serves the highest first (within the queue's x-max-priority); Celery's Redis
    transport keeps one list per priority step and serves 0 first."""
    amqp = broker_url.startswith(("amqp", "pyamqp"))
    return (0 if bulk else 9) if amqp else (9 if bulk else 0)


def queue_arguments(settings: Settings, name: str) -> dict[str, int]:
    """The RabbitMQ arguments a queue is declared with, alike on the worker and the API.

    A model queue (``<queue>.<model>``) gets ``x-max-priority`` so that single uploads overtake
    queued batch items; the shared queue (clean-up, webhooks, tasks of versions before model
    queues) is declared as those versions declared it, since RabbitMQ refuses to redeclare a
    queue with other arguments. The Redis transport ignores queue arguments."""
    if name != settings.queue_name and settings.queue_max_priority:
        return {"x-max-priority": settings.queue_max_priority}
    return {}


def celery_config(settings: Settings) -> dict[str, Any]:
    """Everything both sides of the queue must agree on."""
    return {
        "broker_url": str(settings.broker_url),
        "result_backend": str(settings.result_backend),
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_default_queue": settings.queue_name,
        # x-max-priority goes on the model queues only (queue_arguments): the shared
        # queue keeps the arguments it was first declared with by earlier versions
        "task_queue_max_priority": None,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_track_started": True,
        "result_expires": settings.result_expires_s,
        "task_soft_time_limit": settings.task_soft_time_limit_s,
        "task_time_limit": settings.task_time_limit_s,
        # a worker process loads TensorFlow and the model before its first task
        "worker_proc_alive_timeout": 180,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": settings.enqueue_timeout_s,
        "broker_heartbeat": 30,
        "task_publish_retry": True,
        "task_publish_retry_policy": {
            "max_retries": 2,
            "interval_start": 0.1,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        "broker_transport_options": {
            # RabbitMQ: a publish returns only once the broker has the message (a persistent
            # one on disk), so a task the API answered 202 for survives a broker killed right
            # after; without it, a restart that kills the node (podman's `compose restart`
            # does) lost the accepted uploads. The Redis transport ignores it.
            "confirm_publish": True,
            # an unacked task on a Redis/Valkey broker comes back after this many seconds
            "visibility_timeout": int(settings.task_time_limit_s * 2 + 60),
            "socket_timeout": settings.enqueue_timeout_s,
            "socket_connect_timeout": settings.enqueue_timeout_s,
        },
        "redis_socket_timeout": 5.0,
        "redis_socket_connect_timeout": 3.0,
        "redis_retry_on_timeout": True,
        "redis_backend_health_check_interval": 10,
        # a Redis restart must not lose the result of a task that finishes meanwhile
        "result_backend_always_retry": True,
        "result_backend_max_retries": 30,
        "result_backend_max_sleep_between_retries_ms": 2000,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "task_ignore_result": False,
    }
