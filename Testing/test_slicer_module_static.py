"""Static checks of the Slicer module: what can be verified without Slicer or Qt.

The widget cannot run here, so these tests read MedicalDenoise.py (with ``ast``), the .ui file, the module
CMakeLists and the Extensions Index entry, and check that they agree with each other and with the folder.
"""
from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import struct
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
MODULE_DIR = ROOT / "MedicalDenoise"
MODULE_PY = MODULE_DIR / "MedicalDenoise.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "MedicalDenoise.ui"
LIBRARY_DIR = MODULE_DIR / "MedicalDenoiseLib"
RESOURCES_DIR = MODULE_DIR / "Resources"
MODULE_CMAKE = MODULE_DIR / "CMakeLists.txt"
EXTENSION_JSON = ROOT / "MedicalDenoise.json"

QT_MODULES = {"qt", "ctk", "slicer", "PythonQt", "__main__"}
SLICER_BRIDGE = LIBRARY_DIR / "slicer" / "logic.py"  # the one library module allowed to import slicer
PROTECTED = {"numpy", "scipy", "simpleitk", "vtk"}  # Slicer ships them: never in requirements.txt
# What Slicer's own Python has, which the library's slicer/ package (it runs only inside Slicer) may import.
SLICER_PYTHON_HAS = {"slicer", "vtk", "packaging", "pip"}


def _module_tree() -> ast.Module:
    return ast.parse(MODULE_PY.read_text(encoding="utf-8"), filename=str(MODULE_PY))


def _ui_root() -> ET.Element:
    return ET.parse(UI_FILE).getroot()


def _ui_widgets() -> dict[str, ET.Element]:
    return {w.get("name"): w for w in _ui_root().iter("widget")}


def _property(widget: ET.Element, name: str) -> str | None:
    for prop in widget.findall("property"):
        if prop.get("name") == name:
            value = prop.find("string")
            return value.text if value is not None else None
    return None


def _parameter_fields() -> dict[str, ast.expr]:
    """Annotated fields of the class decorated with @parameterNodeWrapper: {name: annotation}."""
    for node in ast.walk(_module_tree()):
        if isinstance(node, ast.ClassDef):
            names = {d.id if isinstance(d, ast.Name) else getattr(d, "attr", None) for d in node.decorator_list}
            if "parameterNodeWrapper" in names:
                return {s.target.id: s.annotation for s in node.body
                        if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)}
    raise AssertionError("MedicalDenoise.py has no class decorated with @parameterNodeWrapper")


def _class(name: str) -> ast.ClassDef:
    for node in _module_tree().body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return node
    raise AssertionError(f"MedicalDenoise.py has no class {name}")


def _methods(class_name: str) -> dict[str, ast.FunctionDef]:
    return {n.name: n for n in _class(class_name).body if isinstance(n, ast.FunctionDef)}


def _called_attributes(node: ast.AST) -> set[str]:
    """Names of the attributes called anywhere in ``node``: ``x.y(...)`` gives ``y``."""
    return {c.func.attr for c in ast.walk(node) if isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute)}


def _cmake_list(variable: str) -> list[str]:
    text = MODULE_CMAKE.read_text(encoding="utf-8")
    module_name = re.search(r"set\(\s*MODULE_NAME\s+(\S+?)\s*\)", text).group(1)
    match = re.search(rf"set\(\s*{variable}\s+(.*?)\)", text, re.S)
    assert match, f"{MODULE_CMAKE}: no set({variable} ...)"
    lines = (line.split("#", 1)[0].strip() for line in match.group(1).splitlines())
    return [line.replace("${MODULE_NAME}", module_name) for line in lines if line]


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG file"
    return struct.unpack(">II", data[16:24])


# --- the .ui file and the widget code -------------------------------------------------------------------


def test_ui_file_parses_with_a_qmrmlwidget_root():
    root = _ui_root()
    assert root.tag == "ui"
    top = root.find("widget")
    assert top is not None and top.get("class") == "qMRMLWidget"


def test_every_ui_widget_used_in_the_code_exists():
    used = {node.attr for node in ast.walk(_module_tree())
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
            and node.value.attr == "ui" and isinstance(node.value.value, ast.Name) and node.value.value.id == "self"}
    assert used, "MedicalDenoise.py uses no self.ui widgets"
    missing = sorted(used - set(_ui_widgets()))
    assert not missing, f"widgets used in MedicalDenoise.py but absent from {UI_FILE.name}: {missing}"


def test_widget_names_are_unique():
    names = [w.get("name") for w in _ui_root().iter("widget")]
    assert len(names) == len(set(names)), f"duplicate widget names in {UI_FILE.name}"


def test_every_slicer_parameter_name_is_a_parameter_node_field():
    fields = _parameter_fields()
    bound = {_property(w, "SlicerParameterName"): name for name, w in _ui_widgets().items()
             if _property(w, "SlicerParameterName")}
    assert bound, "no widget is bound to the parameter node"
    unknown = sorted(set(bound) - set(fields))
    assert not unknown, f"SlicerParameterName values with no parameter node field: {unknown} (fields: {sorted(fields)})"


def test_combo_boxes_bound_to_values_have_a_choice_annotation():
    # Slicer's QComboBox connector refuses a str/int/float/bool field without Choice(...), and fills the
    # combo box with the choices itself.
    fields = _parameter_fields()
    for name, widget in _ui_widgets().items():
        parameter = _property(widget, "SlicerParameterName")
        if widget.get("class") == "QComboBox" and parameter:
            assert "Choice(" in ast.unparse(fields[parameter]), f"{name} is bound to {parameter}, which has no Choice"


def test_mrml_widgets_receive_the_scene():
    root = _ui_root()
    top = root.find("widget").get("name")
    connected = {c.findtext("receiver") for c in root.iter("connection")
                 if c.findtext("sender") == top and c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
                 and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    mrml = {name for name, w in _ui_widgets().items() if w.get("class", "").startswith("qMRML") and name != top}
    assert mrml, "no MRML widgets in the .ui"
    assert mrml <= connected, f"MRML widgets without a mrmlSceneChanged connection: {sorted(mrml - connected)}"


def test_output_selector_offers_a_new_volume_and_input_is_not_editable():
    widgets = _ui_widgets()
    output = {p.get("name"): p for p in widgets["outputSelector"].findall("property")}
    assert output["noneEnabled"].findtext("bool") == "true"
    assert output["noneDisplay"].findtext("string") == "(new volume)"
    inputs = {p.get("name"): p for p in widgets["inputSelector"].findall("property")}
    assert inputs["addEnabled"].findtext("bool") == "false"


# --- the module script -------------------------------------------------------------------------------------


def _imports_the_library(function: ast.FunctionDef) -> bool:
    return any(isinstance(n, ast.ImportFrom) and (n.module or "").startswith("MedicalDenoiseLib")
               for n in ast.walk(function))


def test_self_tests_that_use_the_library_skip_where_torch_is_missing():
    # ctest loads each test_* method on its own (runTest is not called): every one that denoises must skip
    # itself on build machines without torch, and runTest must treat a skip as a skip.
    methods = _methods("MedicalDenoiseTest")
    guarded = []
    for name, method in methods.items():
        if name.startswith("test_") and _imports_the_library(method):
            body = [s for s in method.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
            first = ast.unparse(body[0]) if body else ""
            assert first == "self._requireTorch()", f"MedicalDenoiseTest.{name} must start with self._requireTorch()"
            guarded.append(name)
    assert guarded, "no self-test denoises"
    assert "skipTest" in _called_attributes(methods["_requireTorch"])
    handlers = [h for h in ast.walk(methods["runTest"]) if isinstance(h, ast.ExceptHandler)]
    assert any(h.type is not None and ast.unparse(h.type) == "unittest.SkipTest" for h in handlers), \
        "runTest must report a skipped test instead of failing"


def test_self_test_runs_the_denoise_buttons_background_path():
    # The button starts the command line in PythonSlicer and loads its result: the self-test (run in a
    # real Slicer) must take the same path, not only the in-process one.
    widget = _methods("MedicalDenoiseWidget")
    button = _called_attributes(widget["onApplyButton"]) | _called_attributes(widget["onPollTimer"])
    tested = set().union(*(_called_attributes(m) for n, m in _methods("MedicalDenoiseTest").items() if n.startswith("test_")))
    path = {"startBackground", "loadBackgroundResult"}
    assert path <= button, f"the Denoise button no longer calls {sorted(path - button)}: update this test"
    assert path <= tested, f"no self-test calls {sorted(path - tested)}"


def test_widget_binds_its_parameter_node_through_the_binding_that_keeps_its_tag():
    # Slicer 5.8's connectGui returns no tag, so disconnectGui(None) leaves stale bindings behind.
    called = _called_attributes(_class("MedicalDenoiseWidget"))
    assert not called & {"connectGui", "disconnectGui"}, "use ParameterNodeBinding, which keeps the tag"
    assert "bind" in _called_attributes(_methods("MedicalDenoiseWidget")["setParameterNode"])


def test_opening_the_module_does_not_load_torch():
    # Models and devices need torch: they are loaded after the panel is shown (a timer) or at Denoise.
    widget = _methods("MedicalDenoiseWidget")
    torch_users = {"deviceDescriptions", "availableModels", "_loadChoices"}
    assert not _called_attributes(widget["setup"]) & torch_users
    enter = ast.unparse(widget["enter"])
    assert "singleShot" in enter and "self._loadChoices()" not in enter


def test_running_jobs_are_stopped_when_slicer_quits_or_the_widget_goes():
    setup, cleanup = _methods("MedicalDenoiseWidget")["setup"], _methods("MedicalDenoiseWidget")["cleanup"]
    assert "slicer.app.connect('aboutToQuit()', self.cleanup)" in ast.unparse(setup)
    assert "stopBackgroundJobs" in _called_attributes(cleanup)


def test_module_script_is_the_only_top_level_python_file():
    assert sorted(p.name for p in MODULE_DIR.glob("*.py")) == ["MedicalDenoise.py"]


def test_module_script_defines_the_slicer_classes():
    classes = {n.name for n in _module_tree().body if isinstance(n, ast.ClassDef)}
    for suffix in ("", "Widget", "Test", "ParameterNode"):
        assert f"MedicalDenoise{suffix}" in classes


def test_module_script_does_not_import_the_library_or_torch_at_load():
    # The module must load before its dependencies are installed (they install on the first Denoise).
    heavy = {"torch", "MedicalDenoiseLib", "safetensors", "skimage", "scipy", "tqdm"}
    for node in _module_tree().body:
        if isinstance(node, ast.Import):
            names = {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names = {(node.module or "").split(".")[0]}
        else:
            continue
        assert not names & heavy, f"MedicalDenoise.py imports {sorted(names & heavy)} at load (line {node.lineno})"


# --- library purity -------------------------------------------------------------------------------------------


def _imported_top_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", sorted(LIBRARY_DIR.rglob("*.py")), ids=lambda p: str(p.relative_to(LIBRARY_DIR)))
def test_library_never_imports_qt_or_slicer(path):
    forbidden = _imported_top_modules(path) & QT_MODULES
    if path == SLICER_BRIDGE:
        forbidden -= {"slicer"}  # the MRML bridge; still never qt or ctk
    assert not forbidden, f"{path.relative_to(ROOT)} imports {sorted(forbidden)}"


# --- CMake lists -------------------------------------------------------------------------------------------


def test_every_library_file_is_listed_in_cmake():
    listed = set(_cmake_list("MODULE_PYTHON_SCRIPTS"))
    actual = {p.relative_to(MODULE_DIR).as_posix() for p in LIBRARY_DIR.rglob("*.py") if "__pycache__" not in p.parts}
    actual.add("MedicalDenoise.py")
    assert not actual - listed, f"Python files missing from MODULE_PYTHON_SCRIPTS: {sorted(actual - listed)}"


def test_every_resource_is_listed_in_cmake():
    listed = set(_cmake_list("MODULE_PYTHON_RESOURCES"))
    actual = {p.relative_to(MODULE_DIR).as_posix() for p in RESOURCES_DIR.rglob("*")
              if p.is_file() and not p.name.startswith(".") and "__pycache__" not in p.parts}
    assert not actual - listed, f"resources missing from MODULE_PYTHON_RESOURCES: {sorted(actual - listed)}"


@pytest.mark.parametrize("variable", ["MODULE_PYTHON_SCRIPTS", "MODULE_PYTHON_RESOURCES"])
def test_every_listed_file_exists(variable):
    entries = _cmake_list(variable)
    assert len(entries) == len(set(entries)), f"{variable} lists a file twice"
    missing = [e for e in entries if not (MODULE_DIR / e).is_file()]
    assert not missing, f"{variable} lists files that do not exist: {missing}"


def test_cmake_builds_the_scripted_module_with_its_test():
    text = MODULE_CMAKE.read_text(encoding="utf-8")
    assert "slicerMacroBuildScriptedModule(" in text and "WITH_GENERIC_TESTS" in text
    assert re.search(r"slicer_add_python_unittest\(\s*SCRIPT\s+\$\{MODULE_NAME\}\.py\s*\)", text)


def test_registry_models_are_shipped():
    registry = json.loads((RESOURCES_DIR / "Models.json").read_text(encoding="utf-8"))
    listed = set(_cmake_list("MODULE_PYTHON_RESOURCES"))
    for model in registry["models"]:
        assert f"Resources/{model['file']}" in listed, f"{model['name']}: its file is not installed by CMake"


def test_icons_are_128_pixel_pngs():
    for path in (RESOURCES_DIR / "Icons" / "MedicalDenoise.png", ROOT / "Resources" / "MedicalDenoise.png"):
        assert _png_size(path) == (128, 128), path


# --- dependencies and the Extensions Index entry ---------------------------------------------------------


def _requirement_names() -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in (RESOURCES_DIR / "requirements.txt").read_text().splitlines())
    return [canonicalize_name(Requirement(line).name) for line in lines if line and not line.startswith("-")]


def test_requirements_never_list_slicers_own_packages():
    names = _requirement_names()
    assert "torch" in names and "torchvision" not in names
    assert not set(names) & PROTECTED, f"requirements.txt must not list {sorted(set(names) & PROTECTED)}"


def _library_imports() -> dict[str, dict[str, set[str]]]:
    """{library file: {"top": modules imported when it loads, "inner": modules imported inside functions}},
    third-party top-level names only."""
    result = {}
    for path in sorted(LIBRARY_DIR.rglob("*.py")):
        imports = {"top": set(), "inner": set()}

        def visit(node, where):
            for child in ast.iter_child_nodes(node):
                inner = where == "inner" or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                if isinstance(child, ast.Import):
                    imports[where] |= {a.name.split(".")[0] for a in child.names}
                elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                    imports[where].add(child.module.split(".")[0])
                visit(child, "inner" if inner else where)

        visit(ast.parse(path.read_text(encoding="utf-8")), "top")
        for key in imports:
            imports[key] -= set(sys.stdlib_module_names) | {"MedicalDenoiseLib", "__future__"}
        result[path.relative_to(LIBRARY_DIR).as_posix()] = imports
    return result


def _pyproject_dependencies() -> tuple[set[str], set[str]]:
    """(core dependencies, those of every extra), as canonical distribution names."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    core = {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}
    extras = {canonicalize_name(Requirement(r).name) for rs in project.get("optional-dependencies", {}).values() for r in rs}
    return core, extras


def test_every_third_party_import_of_the_library_is_a_declared_dependency():
    # Derived from the code, so a new import is caught: what a file imports when it loads must be a core
    # dependency; what it imports inside a function may come from an extra; the slicer/ package runs only
    # inside Slicer and may use what Slicer's Python has.
    core, extras = _pyproject_dependencies()
    distributions = importlib.metadata.packages_distributions()
    problems = []
    for path, imports in _library_imports().items():
        allowed_here = SLICER_PYTHON_HAS if path.startswith("slicer/") else set()
        for where, modules in imports.items():
            declared = core if where == "top" else core | extras
            for module in sorted(modules - allowed_here):
                names = {canonicalize_name(d) for d in distributions.get(module, [module])}
                if not names & declared:
                    problems.append(f"{path} imports {module} ({where}), which pyproject.toml does not declare "
                                    f"{'as a dependency' if where == 'top' else 'in dependencies or an extra'}")
    assert not problems, "\n".join(problems)


def test_extension_index_entry():
    entry = json.loads(EXTENSION_JSON.read_text(encoding="utf-8"))
    for key in ("$schema", "category", "scm_url"):
        assert key in entry, f"{EXTENSION_JSON.name} lacks the required {key!r}"
    assert entry["category"] == "Filtering"
    assert "PyTorch" in entry["build_dependencies"]
    top = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    category = re.search(r'set\(EXTENSION_CATEGORY\s+"([^"]*)"\)', top)
    assert category and category.group(1) == entry["category"], "category differs from EXTENSION_CATEGORY"
    depends = re.search(r'set\(EXTENSION_DEPENDS\s+"?([^")]*)"?\)', top)
    assert depends and "PyTorch" in depends.group(1).split(), "EXTENSION_DEPENDS should name PyTorch"


# --- Server... device and Adapt to this scan -------------------------------------------------------------


def _module_constant(name: str):
    for node in _module_tree().body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value) if not isinstance(node.value, ast.List) else \
                [ast.literal_eval(e) if isinstance(e, ast.Constant) else _module_constant(e.id) for e in node.value.elts]
    raise AssertionError(f"MedicalDenoise.py has no constant {name}")


def _connections(method: ast.FunctionDef) -> dict[str, tuple[str, str]]:
    """``self.ui.W.connect("signal", self.slot)`` in ``method``: {W: (signal, slot)}."""
    found = {}
    for call in ast.walk(method):
        if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "connect"
                and isinstance(call.func.value, ast.Attribute) and len(call.args) == 2):
            found[call.func.value.attr] = (ast.literal_eval(call.args[0]), ast.unparse(call.args[1]))
    return found


def _layout_of(widget_name: str) -> str:
    """The name of the layout that holds ``widget_name`` directly."""
    for layout in _ui_root().iter("layout"):
        if any(w.get("name") == widget_name for item in layout.findall("item") for w in item.findall("widget")):
            return layout.get("name")
    raise AssertionError(f"{widget_name} is in no layout")


def _has_statement(function: ast.AST, source: str) -> bool:
    """Whether ``function`` holds the statement ``source`` (compared as the parser reads both)."""
    return ast.unparse(ast.parse(source)) in ast.unparse(function)


def _calls(function: ast.AST, name: str) -> list[ast.Call]:
    return [c for c in ast.walk(function) if isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute)
            and c.func.attr == name]


def test_the_panel_has_the_server_and_adapt_widgets_bound_to_their_parameters():
    widgets = _ui_widgets()
    expected = {"serverUrlLineEdit": ("QLineEdit", "serverUrl"), "serverTokenButton": ("QPushButton", None),
                "adaptCheckBox": ("QCheckBox", "adaptToScan"), "adaptMinutesSpinBox": ("QSpinBox", "adaptMinutes"),
                "saveAdaptedModelButton": ("QPushButton", None), "adaptedModelLabel": ("QLabel", None)}
    for name, (widget_class, parameter) in expected.items():
        assert name in widgets and widgets[name].get("class") == widget_class, name
        assert _property(widgets[name], "SlicerParameterName") == parameter, name
    assert _property(widgets["serverUrlLineEdit"], "placeholderText") == "http://gpu-server:8765"
    minutes = {p.get("name"): p.findtext("number") for p in widgets["adaptMinutesSpinBox"].findall("property")}
    assert minutes["value"] == "3" and int(minutes["minimum"]) >= 1
    # "Adapt to this scan" sits beside Denoise; the URL and the Token button beside each other.
    assert _layout_of("adaptCheckBox") == _layout_of("applyButton") == _layout_of("adaptMinutesSpinBox")
    assert _layout_of("serverUrlLineEdit") == _layout_of("serverTokenButton")
    fields = _parameter_fields()
    assert "server" in _module_constant("_DEVICES") and "_DEVICES" in ast.unparse(fields["device"])
    assert ast.unparse(fields["adaptMinutes"]).startswith("Annotated[int")
    connected = _connections(_methods("MedicalDenoiseWidget")["setup"])
    assert connected["serverTokenButton"] == ("clicked(bool)", "self.onServerTokenButton")
    assert connected["saveAdaptedModelButton"] == ("clicked(bool)", "self.onSaveAdaptedModelButton")
    assert {"onServerTokenButton", "onSaveAdaptedModelButton"} <= set(_methods("MedicalDenoiseWidget"))


def test_the_server_token_lives_in_slicer_settings_never_in_the_scene():
    setting = _module_constant("_TOKEN_SETTING")
    assert setting.startswith("MedicalDenoise/")
    assert not [f for f in _parameter_fields() if "token" in f.lower()], "the token must not be a parameter"
    assert not [n for n, w in _ui_widgets().items() if "token" in (_property(w, "SlicerParameterName") or "").lower()]
    methods = _methods("MedicalDenoiseWidget")
    dialog = methods["onServerTokenButton"]
    assert [ast.unparse(c.args[0]) for c in _calls(dialog, "setTextEchoMode")] == ["qt.QLineEdit.Password"]
    assert [ast.unparse(c.args[0]) for c in _calls(dialog, "setValue")] == ["_TOKEN_SETTING"]
    assert "QSettings" in ast.unparse(dialog)
    # The Denoise button reads it there and hands it to the logic, which writes the private token file.
    apply = methods["onApplyButton"]
    (start,) = _calls(apply, "startBackground")
    keywords = {k.arg: ast.unparse(k.value) for k in start.keywords}
    assert keywords["server"] == "server" and keywords["token"] == "token"
    assert "_TOKEN_SETTING" in ast.unparse(apply)
    # Nowhere is a token written into the parameter node.
    for function in ast.walk(_class("MedicalDenoiseWidget")):
        if isinstance(function, ast.Assign):
            for target in function.targets:
                text = ast.unparse(target)
                assert not ("_parameterNode" in text and "token" in text.lower()), text


def test_adapt_and_server_exclude_each_other_and_say_why():
    modified = _methods("MedicalDenoiseWidget")["onParameterNodeModified"]
    assert _has_statement(modified, "server, adapting = p.device == _SERVER, p.adaptToScan and p.device != _SERVER")
    assert _has_statement(modified, "self.ui.adaptCheckBox.enabled = not running and not server")
    assert _has_statement(modified, "self.ui.adaptCheckBox.toolTip = _ADAPT_OFF_ON_SERVER if server else self._adaptToolTip")
    assert _has_statement(modified, "self._enableServerChoice(not adapting)")
    assert "adapting runs on this computer" in _module_constant("_ADAPT_OFF_ON_SERVER")
    assert "adapting runs on this computer" in _module_constant("_SERVER_OFF_WHILE_ADAPTING")
    greys = _methods("MedicalDenoiseWidget")["_enableServerChoice"]
    assert _calls(greys, "setEnabled") and "_SERVER_OFF_WHILE_ADAPTING" in ast.unparse(greys)
    apply = _methods("MedicalDenoiseWidget")["onApplyButton"]
    assert _has_statement(apply, "adaptMinutes = p.adaptMinutes if p.adaptToScan and not server else None")


def test_an_adapted_model_is_used_on_another_series_only_once_the_user_confirms():
    apply = _methods("MedicalDenoiseWidget")["onApplyButton"]
    (check,) = _calls(apply, "adaptedModelWarning")
    (confirm,) = _calls(apply, "confirmOkCancelDisplay")
    (start,) = _calls(apply, "startBackground")
    assert check.lineno < confirm.lineno < start.lineno
    keywords = {k.arg: ast.unparse(k.value) for k in start.keywords}
    assert keywords["acceptOtherSeries"] == "bool(warning)" and keywords["adaptMinutes"] == "adaptMinutes"
    assert _has_statement(apply, "self.ui.statusLabel.text = f'Warning: {warning}'")
    # The panel names the series the chosen adapted model was fitted to, and warns in the status line.
    shown = _methods("MedicalDenoiseWidget")["_updateAdaptedModel"]
    assert "adapted.fittedTo" in ast.unparse(shown)
    assert _has_statement(shown, "self.ui.statusLabel.text = f'Warning: {warning}'")


def test_adapted_models_are_listed_saved_and_removed_with_the_session():
    methods = _methods("MedicalDenoiseWidget")
    assert "self.logic.adaptedModels" in ast.unparse(methods["_populateModelSelector"])
    save = methods["onSaveAdaptedModelButton"]
    assert _calls(save, "getSaveFileName") and _calls(save, "save")
    assert "removeFiles" in _called_attributes(methods["cleanup"])
    assert "_populateModelSelector" in _called_attributes(methods["onPollTimer"])
