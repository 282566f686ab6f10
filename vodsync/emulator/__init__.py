"""A local ApsaraVideo VOD + OSS service that the unmodified SDKs talk to.

It imports nothing from the rest of vodsync: it describes the service, not our
assumptions about it. See docs/emulator.md.
"""
