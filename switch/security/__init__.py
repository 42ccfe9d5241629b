"""Scheme PKI (CA, participant certificates, revocation) and XML-DSig of messages."""
