"""Image quality: is a photograph gradable, before it is graded (``measures``, ``assessor``)."""
