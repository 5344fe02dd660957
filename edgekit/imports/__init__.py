"""`edgekit import`: models users already have, as model directories every later command takes."""
