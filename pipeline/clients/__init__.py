"""The adapters to the servers: the Kafka consumer, producer and admin client, the MongoDB sink and the
dead-letter writer. Only public confluent-kafka and pymongo APIs, never one server's wording."""
