"""Reports: leaderboard tables, trade-off plots, run comparison and merging."""
