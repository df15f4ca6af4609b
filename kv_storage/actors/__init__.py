"""Actors: asyncio tasks that own their state and are reached only through typed messages."""
