"""Safe extraction of a dataset's files from its zip, and ``pack``, which writes such a zip.

In: a verified archive and its ``DatasetSpec``. Out: the dataset's files, flat in a folder.
"""

from __future__ import annotations

import shutil
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from recflow.data.datasets import DatasetSpec
from recflow.errors import UserError

MB = 1024 * 1024


def extract(spec: DatasetSpec, archive: Path, dest: Path) -> list[Path]:
    """Extract the dataset's files from ``archive`` into ``dest`` (flat), safely.

    Refuses archives that lack the expected layout, members whose paths would escape ``dest``,
    and content that expands beyond the dataset's plausible size (a zip bomb).
    """
    limit = spec.max_unpacked_mb * MB
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as e:
        raise UserError(f"{archive} is not a readable zip archive ({e})") from e
    with zf:
        infos = {i.filename: i for i in zf.infolist()}
        for name in infos:
            p = PurePosixPath(name)
            if p.is_absolute() or ".." in p.parts or "\\" in name or ":" in p.parts[0]:
                raise UserError(
                    f"{archive} has a member {name!r} that would land outside the target folder"
                )
        missing = [m for m in spec.members if m not in infos]
        if missing:
            raise UserError(
                f"{archive} is not in the {spec.name} layout: missing {', '.join(missing)}; "
                f"expected the files under a top-level '{spec.folder}/' folder"
            )
        declared = sum(infos[m].file_size for m in spec.members)
        if declared > limit:
            raise UserError(
                f"{archive} would expand to {declared / MB:.0f} MB, far beyond {spec.name}'s "
                f"{spec.max_unpacked_mb} MB; refusing to extract it"
            )
        dest.mkdir(parents=True, exist_ok=True)
        out = []
        for member in spec.members:
            path = dest / PurePosixPath(member).name
            try:
                # zipfile stops at the declared size and checks the CRC, so a header that
                # lies about the size (checked above) surfaces here as BadZipFile.
                with zf.open(infos[member]) as src, open(path, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            except (zipfile.BadZipFile, zlib.error, EOFError) as e:
                path.unlink(missing_ok=True)
                raise UserError(f"{archive} is damaged ({member}: {e}); download it again") from e
            out.append(path)
    return out


_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can hold


def pack(
    spec: DatasetSpec, files: Mapping[str, str | bytes], dest: Path, folder: str | None = None,
    compresslevel: int | None = None,
) -> Path:  # fmt: skip
    """Write ``files`` (name -> text or bytes) into a zip in the dataset's layout, under its
    top-level folder (or ``folder``), text encoded as the dataset's own files are: what
    ``data_url`` takes, e.g. to run the pipeline on data of your own. The same files give the
    same bytes (fixed timestamps), so the same data keeps its checksum. ``compresslevel`` is
    zlib's (default 6); 1 packs large data several times faster for a larger zip."""
    folder = spec.folder if folder is None else folder
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in files.items():
            data = content.encode(spec.encoding) if isinstance(content, str) else content
            info = zipfile.ZipInfo(f"{folder}/{name}" if folder else name, _ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16  # a regular file, readable by all
            zf.writestr(info, data, compresslevel=compresslevel)
    return dest
