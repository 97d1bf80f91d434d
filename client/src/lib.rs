//! BlipMQ client.
