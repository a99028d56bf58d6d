"""TLS: development certificates, and client-side connection options."""
