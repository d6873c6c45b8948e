"""The Slicer side without Qt: the logic on MRML nodes, the background job that runs the command line in a
child process, and the installer of Python dependencies. Only Slicer (or slicer-core in tests) imports it."""
