"""Clarion's configuration: settings from the environment and `.env`, and log formatting."""
