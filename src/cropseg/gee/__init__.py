"""Earth Engine side of cropseg: composites, training samples, exports and task tracking.

Everything here builds earthengine-api computation graphs; nothing talks to Earth Engine
until a task is started. ``cropseg.gee.engine.offline()`` initializes the library without
credentials (as earthengine-api's own test harness does) so graphs can be built,
serialized and reviewed with ``dry_run=true`` or in tests.
"""
