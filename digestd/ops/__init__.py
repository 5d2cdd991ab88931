"""What operators read and run by hand: counts and activity, Prometheus metrics, previews,
the demo, progress bars.

May import: anything below it (every package but ``web``).
"""
