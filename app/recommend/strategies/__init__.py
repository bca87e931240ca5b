"""Strategy functions, grouped by family. Each takes a RankContext and returns a Ranking, or
None when it has too little signal (the service then walks the registry's fallback chain)."""
