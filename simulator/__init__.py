"""Local stand-in for the SendGrid and Firebase Cloud Messaging HTTP APIs."""
