"""What several test files share: tiny models, sample photos, sweep runners."""
