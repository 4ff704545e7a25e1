"""Recording a device's channels and state to an MCAP file (``monbridge record``).

Modules, from the bytes up:

    cdr.py       CDR (little-endian, ROS 2 flavour) encoding: a fixed layout for records,
                 a writer for variable messages. Pure: numpy and the standard library.
    schemas.py   what each channel becomes in the file: ros2msg schemas generated from a
                 records dtype, Foxglove's RawImage / PointCloud / Log, a dtype-keeping
                 NDArray, JSON. Pure: numpy and the standard library.
    writer.py    the MCAP side (the ``mcap`` package, extra ``monbridge[record]``): the
                 ``.part`` file, chunks, metadata, finish and rename.
    recorder.py  the read loop: one more reader of the device's shared memory, with its own
                 cursors; turns what it reads into messages for the writer.
    cli.py       ``monbridge record``: arguments, signals, progress lines, exit codes.

And for playing a recording back, from the file up:

    chunks.py    an indexed file's messages in log-time order, chunk by chunk.
    foreign.py   decoders of Foxglove's schemas and JSON channels monbridge did not write.
    reader.py    a file's tracks (the device channels to recreate) and decoded messages.
    replay.py    the clock (speed, pause, seek) and the loop that hands out each tick's messages.
    replay_cli.py  ``monbridge replay`` and ``monbridge recordings``.

Nothing here is imported by ``bridge.cli`` until ``monbridge record`` or ``replay`` runs
(cli.py and replay_cli.py import the standard library only at the top), and only writer.py,
reader.py and chunks.py import ``mcap``. docs/recording.md describes the file.
"""
