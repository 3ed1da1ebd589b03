"""Turn one run's artifact folder into the Markdown write-up under docs/ and build the site."""
