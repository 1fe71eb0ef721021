"""Conversation runs: LangGraph graphs and their checkpoints."""
