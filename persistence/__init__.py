"""Storage: PostgreSQL schema and repositories, the Redis cache, the RabbitMQ topology.

Imports only `clarion.config`: storage knows no actors and no HTTP.
"""
