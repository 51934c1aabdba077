# Hostile: burns CPU forever.
while True:
    pass
