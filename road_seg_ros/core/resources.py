"""Where the package's shipped files are: a source checkout, the installed share, or the ament index."""

import sys
from pathlib import Path

from .files import one_line

PACKAGE = "road_seg_ros"
NODE_NAME = "road_seg"  # the node's default name: also its section in the params file
PARAMS_FILE_NAME = "road_seg.yaml"
REPO_ROOT = Path(__file__).resolve().parents[2]  # the source checkout (or the site-packages folder when installed)


def share_folders(kind: str) -> list[Path]:
    """Candidate folders for ``kind`` (models, config, bags), most specific first."""
    folders = [REPO_ROOT / kind, Path(sys.prefix) / "share" / PACKAGE / kind]
    try:
        from ament_index_python.packages import get_package_share_directory

        folders.append(Path(get_package_share_directory(PACKAGE)) / kind)
    except (ImportError, LookupError, OSError):
        pass  # not in a ROS 2 workspace
    return folders


def find_shipped(kind: str, name: str) -> Path | None:
    """A shipped file (e.g. ``config``, ``road_seg.yaml``) from the first folder that has it; None if none does."""
    return next((folder / name for folder in share_folders(kind) if (folder / name).is_file()), None)


def shipped_or_default(kind: str, name: str) -> Path:
    """The shipped file, or where it would be in the checkout (so an error can name that path)."""
    return find_shipped(kind, name) or REPO_ROOT / kind / name


class ParamsFileError(ValueError):
    """A params file that cannot be read; the message is one line."""


def read_node_parameters(params_file, node_name: str) -> dict:
    """A node's ros__parameters in a ROS 2 params file: its own section, else the /** wildcard; {} if neither."""
    import yaml

    try:
        sections = yaml.safe_load(Path(params_file).read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ParamsFileError(f"cannot read params file {params_file}: {one_line(error)}") from None
    if not isinstance(sections, dict):
        raise ParamsFileError(f"params file {params_file} is not a mapping of node names")
    for key in (node_name, f"/{node_name}", "/**"):
        if isinstance(sections.get(key), dict):
            return dict(sections[key].get("ros__parameters") or {})
    return {}
