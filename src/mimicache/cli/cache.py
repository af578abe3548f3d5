"""``mimicache cache ls | stats | verify | prune | clear``: the sub-command is registered and
run by ``mimicache.cache.commands`` for now; this is where the CLI reaches it."""

from mimicache.cache.commands import DEFAULT_CACHE_DIR, add_cache_commands, run_cache_command

__all__ = ["DEFAULT_CACHE_DIR", "add_cache_commands", "run_cache_command"]
