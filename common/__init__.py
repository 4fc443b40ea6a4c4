"""Code shared by every stage: paths, the manifest, CLI errors, environment records."""
