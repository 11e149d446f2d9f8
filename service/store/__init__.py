"""The stores: ORM schema, database engine, bulk upsert, Qdrant adapter and the plain read helpers."""
