"""`argen serve`'s page in a real browser: Debian's chromium, headless, driven through its chromedriver by selenium.

The page loads its models, a click on Generate draws every step and ends on an image, a mask painted with the
pointer and a click on Edit give an edited image whose pixels outside the mask are the original's. Skipped, with the
reason, only where chromium or chromedriver is missing and CI is not set; CI installs both (.ci/run), and there a
missing browser fails the test. ``ARGEN_SERVE_SCREENSHOT=docs/serve.png`` also saves a screenshot of the page.
"""

import base64
import io
import os
import shutil

import pytest
import torch
from PIL import Image

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
DRIVERS = ("chromedriver", "/usr/lib/chromium/chromedriver")


def find(names):
    return next((shutil.which(name) for name in names if shutil.which(name)), None)


def missing() -> str | None:
    """Why the browser test cannot run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    if find(BROWSERS) is None:
        return "no chromium (apt-get install chromium chromium-driver)"
    if find(DRIVERS) is None:
        return "no chromedriver (apt-get install chromium-driver)"
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        return "the serve extra is not installed (pip install -e '.[serve]')"
    return None


REASON = missing()
if REASON is not None:
    if os.environ.get("CI"):
        pytest.fail(f"the browser test must run in CI, but {REASON}", pytrace=False)
    pytest.skip(REASON, allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402
from test_serve import EditRecorder  # noqa: E402

from argen.pipeline import Pipeline  # noqa: E402
from argen.serve.app import create_app  # noqa: E402
from argen.serve.models import default_model_directories, load_models  # noqa: E402
from argen.serve.server import background_server  # noqa: E402

WAIT = 60  # seconds: every wait is bounded
CANVAS_IS_NOT_BLACK = (
    "Array.from(document.getElementById('image').getContext('2d').getImageData(0, 0, 28, 28).data)"
    ".some((value, index) => index % 4 < 3 && value > 0)"
)


@pytest.fixture(scope="module")
def server():
    recorder = EditRecorder()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Pipeline, "edit", recorder.function, raising=False)
        app = create_app(load_models(default_model_directories()), trusted_hosts=["127.0.0.1", "localhost"])
        with background_server(app) as url:
            yield url


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = find(BROWSERS)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1200,1000", "--hide-scrollbars"):  # fmt: skip
        options.add_argument(argument)
    # The driver's path is given, so selenium never tries to download one.
    driver = webdriver.Chrome(options=options, service=Service(executable_path=find(DRIVERS)))
    driver.set_page_load_timeout(WAIT)
    driver.set_script_timeout(WAIT)
    yield driver
    driver.quit()


def page_state(driver, expression):
    return driver.execute_script(f"return {expression};")


def wait_until(driver, expression, message):
    try:
        WebDriverWait(driver, WAIT, poll_frequency=0.05).until(lambda d: page_state(d, expression))
    except Exception:
        status = page_state(driver, "document.getElementById('status').textContent")
        pytest.fail(f"{message}; the page says: {status}")


def pixels(url: str) -> torch.Tensor:
    image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("L")
    return torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(image.height, image.width)


def test_generate_then_paint_a_mask_and_edit(server, browser):
    browser.get(server + "/")
    wait_until(browser, "document.body.dataset.state === 'ready'", "the page did not load its models")
    assert Select(browser.find_element(By.ID, "model")).first_selected_option.get_attribute("value") == "frequency"
    Select(browser.find_element(By.ID, "label")).select_by_value("0")  # T-shirt/top
    browser.find_element(By.ID, "generate").click()
    wait_until(browser, "window.argen.generated === 1", "Generate gave no image")
    assert page_state(browser, "window.argen.lastError") is None
    assert len(browser.find_elements(By.CSS_SELECTOR, "#steps figure")) == 6  # one picture per step
    generated = page_state(browser, "window.argen.image")
    assert pixels(generated).shape == (28, 28) and pixels(generated).max() > 0  # a drawn, non-black image
    assert page_state(browser, CANVAS_IS_NOT_BLACK)  # and the canvas shows it

    # Paint a stroke down the right part of the image with the pointer.
    canvas = browser.find_element(By.ID, "mask")
    side = canvas.size["width"]
    actions = ActionChains(browser)
    actions.move_to_element_with_offset(canvas, side // 4, -side // 3).click_and_hold()
    for _ in range(8):
        actions.move_by_offset(0, side // 12)
    actions.release().perform()
    mask = torch.tensor(page_state(browser, "Array.from(window.argen.mask)"), dtype=torch.bool).view(28, 28)
    assert mask.any() and not mask[:, :14].any()  # painted on the right, where the pointer went

    # Inpaint it as another class with another seed.
    Select(browser.find_element(By.ID, "label")).select_by_value("8")  # bag
    browser.find_element(By.ID, "seed").clear()
    browser.find_element(By.ID, "seed").send_keys("5")
    browser.find_element(By.ID, "edit").click()
    wait_until(browser, "window.argen.edited === 1", "Edit gave no image")
    assert page_state(browser, "window.argen.lastError") is None
    edited = page_state(browser, "window.argen.image")
    assert edited != generated
    assert torch.equal(pixels(edited)[~mask], pixels(generated)[~mask])  # outside the mask: the original
    # The mask is cleared once the edit is shown, so its red overlay does not hide the result.
    assert not any(page_state(browser, "Array.from(window.argen.mask)"))
    assert len(browser.find_elements(By.CSS_SELECTOR, "#history figure")) == 2
    screenshot = os.environ.get("ARGEN_SERVE_SCREENSHOT")
    if screenshot:  # the README's picture: the right half inpainted under the sample's own class
        Select(browser.find_element(By.ID, "label")).select_by_value("0")
        browser.find_element(By.ID, "mask-right").click()
        browser.find_element(By.ID, "edit").click()
        wait_until(browser, "window.argen.edited === 2", "Edit gave no image")
        browser.execute_script("window.scrollTo(0, 0)")
        browser.save_screenshot(screenshot)


def test_a_refused_upload_shows_its_message_and_the_page_goes_on(server, browser, tmp_path):
    browser.get(server + "/")
    wait_until(browser, "document.body.dataset.state === 'ready'", "the page did not load its models")
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    browser.find_element(By.ID, "upload").send_keys(str(text))
    wait_until(browser, "window.argen.lastError !== null && document.body.dataset.state === 'ready'", "no message")
    assert "cannot be read as an image" in page_state(browser, "window.argen.lastError")
    picture = tmp_path / "picture.png"
    Image.new("L", (90, 90), 255).save(picture)
    browser.find_element(By.ID, "upload").send_keys(str(picture))
    wait_until(browser, "window.argen.image !== null", "the upload was not shown")
    assert pixels(page_state(browser, "window.argen.image")).min() == 255
