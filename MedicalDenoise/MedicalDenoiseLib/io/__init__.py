"""Images in and out: files, folders and DICOM series read into a :class:`Volume` (array + geometry) and
written back on exactly the same grid."""
