"""The query side after the global search: local features, geometric verification, partial-copy
candidates and copy/similar tiers (issue #25). Importing this package is cheap; OpenCV is
imported where features are computed."""
