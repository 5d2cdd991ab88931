# Guarded: helper processes are spawned, and a spawned child imports this module again
# (as __mp_main__); unguarded, each helper would import the whole CLI it never uses.
if __name__ == "__main__":
    from digestd.cli import entry

    entry()
