//! BlipMQ wire protocol v1.
