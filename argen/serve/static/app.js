// The argen serve page: plain JavaScript over the JSON API beside it (no framework, no CDN: works offline).
// The image and the mask live at the model's resolution (28×28 for Fashion-MNIST) and are scaled up by CSS.
"use strict";

const $ = (id) => document.getElementById(id);

// Everything the page knows, exposed for the browser console and the browser test.
const state = {
  models: [],
  model: null,
  image: null, // data URL of the current image (a sample, an upload or an edit), or null
  mask: null, // Uint8Array(size * size), 1 = regenerate
  size: 28,
  generated: 0, // finished generations
  edited: 0, // finished edits
  lastError: null,
};
window.argen = state;

function setStatus(text, { error = false } = {}) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
  if (error) state.lastError = text;
}

function setBusy(busy) {
  document.body.dataset.state = busy ? "busy" : "ready";
  for (const id of ["generate", "edit", "upload", "model"]) $(id).disabled = busy;
}

async function errorOf(response) {
  try {
    const body = await response.json();
    return body.error || `HTTP ${response.status}`;
  } catch {
    return `HTTP ${response.status}`;
  }
}

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error("the server sent an image the browser cannot show"));
    image.src = url;
  });
}

async function drawImage(url) {
  const canvas = $("image");
  const context = canvas.getContext("2d");
  context.imageSmoothingEnabled = false;
  const image = await loadImage(url);
  context.clearRect(0, 0, canvas.width, canvas.height);
  context.drawImage(image, 0, 0, canvas.width, canvas.height);
}

function thumbnail(url, caption) {
  const figure = document.createElement("figure");
  const image = document.createElement("img");
  image.src = url;
  image.alt = caption;
  const text = document.createElement("figcaption");
  text.textContent = caption;
  figure.append(image, text);
  return figure;
}

async function setImage(url, caption) {
  state.image = url;
  await drawImage(url);
  if (caption) {
    const figure = thumbnail(url, caption);
    figure.addEventListener("click", () => {
      if (document.body.dataset.state === "busy") return;
      setImage(url, null);
      markCurrent(figure);
      setStatus(`editing ${caption}`);
    });
    $("history").prepend(figure);
    markCurrent(figure);
    while ($("history").children.length > 24) $("history").lastChild.remove();
  }
}

function markCurrent(figure) {
  for (const other of $("history").children) other.classList.toggle("current", other === figure);
}

// ---------------------------------------------------------------------------------------------------------------
// Models

function currentModel() {
  return state.models.find((model) => model.name === $("model").value);
}

function chooseModel() {
  const model = currentModel();
  const sizeChanged = !state.model || state.model.image_size !== model.image_size
    || state.model.channels !== model.channels;
  state.model = model;
  const label = $("label");
  const previous = label.value;
  label.replaceChildren(...model.classes.map((name, index) => new Option(`${index} ${name}`, String(index))));
  label.disabled = model.classes.length === 0;
  if (model.classes.length === 0) label.append(new Option("unconditional", ""));
  else if (previous && Number(previous) < model.classes.length) label.value = previous;
  $("top-k").max = model.codebook_size;
  if (model.sampling) {  // start from the model's recommended settings (its sampling.json)
    $("cfg-scale").value = model.sampling.cfg_scale;
    $("temperature").value = model.sampling.temperature;
    $("top-k").value = model.sampling.top_k;
    $("top-p").value = model.sampling.top_p;
  }
  $("keep-steps").max = model.steps;
  if (Number($("keep-steps").value) > model.steps) $("keep-steps").value = model.steps;
  $("keep-steps-value").textContent = $("keep-steps").value;
  $("model-info").textContent = `${model.order} order, ${model.steps} steps, ${(model.parameters / 1e6).toFixed(2)} M`
    + ` parameters, ${model.image_size}×${model.image_size}`;
  if (sizeChanged) {
    state.size = model.image_size;
    for (const id of ["image", "mask"]) {
      $(id).width = state.size;
      $(id).height = state.size;
    }
    state.image = null;
    state.mask = new Uint8Array(state.size * state.size);
    drawMask();
  }
}

async function loadModels() {
  const response = await fetch("/api/models");
  if (!response.ok) throw new Error(await errorOf(response));
  const body = await response.json();
  state.models = body.models;
  $("model").replaceChildren(...state.models.map((model) => new Option(`${model.name} (${model.order})`, model.name)));
  const preferred = state.models.find((model) => model.order === "frequency") || state.models[0];
  $("model").value = preferred.name;
  chooseModel();
}

// ---------------------------------------------------------------------------------------------------------------
// Sampling settings shared by generate and edit

function sampling() {
  const settings = {
    model: state.model.name,
    cfg_scale: Number($("cfg-scale").value),
    temperature: Number($("temperature").value),
    top_k: Number($("top-k").value),
    top_p: Number($("top-p").value),
  };
  if (state.model.classes.length) settings.label = Number($("label").value);
  if ($("seed").value !== "") settings.seed = Number($("seed").value);
  return settings;
}

function className(label) {
  return label === null || label === undefined ? "sample" : state.model.classes[label];
}

// ---------------------------------------------------------------------------------------------------------------
// Generate: read the NDJSON stream line by line and draw every step as it arrives

async function generate() {
  setBusy(true);
  $("steps").replaceChildren();
  setStatus("generating…");
  try {
    const response = await fetch("/api/generate", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(sampling()),
    });
    if (!response.ok) throw new Error(await errorOf(response));
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let finished = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, newline).trim();
        buffer = buffer.slice(newline + 1);
        if (!line) continue;
        const event = JSON.parse(line);
        if (event.error) throw new Error(event.error);
        if (event.done) {
          finished = event;
        } else {
          setStatus(`step ${event.step} / ${event.steps}`);
          $("steps").append(thumbnail(event.images[0], `${event.step}`));
          await drawImage(event.images[0]);
        }
      }
    }
    if (!finished) throw new Error("the stream ended before the image was finished");
    await setImage(finished.images[0], `${className(finished.label)} #${finished.seed}`);
    state.generated += 1;
    setStatus(`${state.model.name}: ${className(finished.label)}, seed ${finished.seed}, `
      + `${finished.forward_passes} steps in ${finished.seconds.toFixed(2)} s`);
  } catch (error) {
    setStatus(error.message, { error: true });
  } finally {
    setBusy(false);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The mask: paint with the pointer, or use a preset

function drawMask() {
  const canvas = $("mask");
  const context = canvas.getContext("2d");
  const pixels = context.createImageData(state.size, state.size);
  state.mask.forEach((value, index) => {
    if (value) pixels.data.set([255, 40, 40, 120], index * 4);
  });
  context.putImageData(pixels, 0, 0);
}

function paint(event) {
  const rect = $("mask").getBoundingClientRect();
  const x = Math.floor(((event.clientX - rect.left) / rect.width) * state.size);
  const y = Math.floor(((event.clientY - rect.top) / rect.height) * state.size);
  const radius = Number($("brush").value) / 2;
  const value = $("eraser").checked || event.buttons === 2 ? 0 : 1;
  for (let row = Math.floor(y - radius + 0.5); row < y + radius; row += 1) {
    for (let column = Math.floor(x - radius + 0.5); column < x + radius; column += 1) {
      if (row >= 0 && row < state.size && column >= 0 && column < state.size) state.mask[row * state.size + column] = value;
    }
  }
  drawMask();
}

function presetMask(inside) {
  for (let row = 0; row < state.size; row += 1) {
    for (let column = 0; column < state.size; column += 1) {
      state.mask[row * state.size + column] = inside(row, column) ? 1 : 0;
    }
  }
  drawMask();
}

function maskBlob() {
  const canvas = document.createElement("canvas");
  canvas.width = state.size;
  canvas.height = state.size;
  const context = canvas.getContext("2d");
  const pixels = context.createImageData(state.size, state.size);
  state.mask.forEach((value, index) => {
    const level = value ? 255 : 0;
    pixels.data.set([level, level, level, 255], index * 4);
  });
  context.putImageData(pixels, 0, 0);
  return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
}

function dataUrlBlob(url) {
  const [head, body] = url.split(",");
  const bytes = atob(body);
  const array = new Uint8Array(bytes.length);
  for (let index = 0; index < bytes.length; index += 1) array[index] = bytes.charCodeAt(index);
  return new Blob([array], { type: head.slice(5).split(";")[0] });
}

// ---------------------------------------------------------------------------------------------------------------
// Edit and upload

function mode() {
  return document.querySelector('input[name="mode"]:checked').value;
}

async function edit() {
  if (!state.image) {
    setStatus("generate or upload an image first", { error: true });
    return;
  }
  const chosen = mode();
  if (chosen !== "class-edit" && !state.mask.some((value) => value)) {
    setStatus("paint a mask over the image first (or use a preset)", { error: true });
    return;
  }
  setBusy(true);
  $("steps").replaceChildren();
  setStatus(`${chosen}…`);
  try {
    const form = new FormData();
    for (const [name, value] of Object.entries(sampling())) form.append(name, String(value));
    form.append("image", dataUrlBlob(state.image), "image.png");
    if (chosen === "class-edit") form.append("keep_steps", $("keep-steps").value);
    else form.append("mask", await maskBlob(), "mask.png");
    if (chosen === "outpaint") form.append("invert", "true");
    form.append("paste_back", $("paste-back").checked ? "true" : "false");
    const response = await fetch("/api/edit", { method: "POST", body: form });
    if (!response.ok) throw new Error(await errorOf(response));
    const result = await response.json();
    for (const [index, images] of result.intermediates.entries()) {
      $("steps").append(thumbnail(images[0], `${index + 1}`));
      await drawImage(images[0]);
      await new Promise((resolve) => setTimeout(resolve, 60)); // let the eye follow the steps
    }
    await setImage(result.images[0], `${chosen} ${className(result.label)}`);
    // The edit is done: clear the mask so its red overlay no longer hides the result; paint anew for the next edit.
    state.mask.fill(0);
    drawMask();
    state.edited += 1;
    setStatus(`${chosen} with ${state.model.name}: ${className(result.label)}, seed ${result.seed}, `
      + `${result.forward_passes} steps in ${result.seconds.toFixed(2)} s`);
  } catch (error) {
    setStatus(error.message, { error: true });
  } finally {
    setBusy(false);
  }
}

async function upload() {
  const file = $("upload").files[0];
  if (!file) return;
  setBusy(true);
  setStatus(`reading ${file.name}…`);
  try {
    const form = new FormData();
    form.append("model", state.model.name);
    form.append("image", file, file.name);
    const response = await fetch("/api/upload", { method: "POST", body: form });
    if (!response.ok) throw new Error(await errorOf(response));
    const result = await response.json();
    await setImage(result.image, file.name);
    setStatus(`${file.name}: paint a mask and press Edit`);
  } catch (error) {
    setStatus(error.message, { error: true });
  } finally {
    $("upload").value = "";
    setBusy(false);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Wiring

function showKeepSteps() {
  $("keep-steps-row").hidden = mode() !== "class-edit";
}

function wire() {
  $("model").addEventListener("change", chooseModel);
  $("generate").addEventListener("click", generate);
  $("edit").addEventListener("click", edit);
  $("upload").addEventListener("change", upload);
  $("random-seed").addEventListener("click", () => {
    $("seed").value = String(Math.floor(Math.random() * 2 ** 31));
  });
  $("keep-steps").addEventListener("input", () => {
    $("keep-steps-value").textContent = $("keep-steps").value;
  });
  for (const radio of document.querySelectorAll('input[name="mode"]')) radio.addEventListener("change", showKeepSteps);
  showKeepSteps();
  const canvas = $("mask");
  canvas.addEventListener("pointerdown", (event) => {
    canvas.setPointerCapture(event.pointerId);
    paint(event);
  });
  canvas.addEventListener("pointermove", (event) => {
    if (event.buttons) paint(event);
  });
  canvas.addEventListener("contextmenu", (event) => event.preventDefault());
  const half = () => state.size / 2;
  $("mask-right").addEventListener("click", () => presetMask((row, column) => column >= half()));
  $("mask-centre").addEventListener("click", () => presetMask((row, column) => {
    const quarter = state.size / 4;
    return row >= quarter && row < 3 * quarter && column >= quarter && column < 3 * quarter;
  }));
  $("mask-invert").addEventListener("click", () => {
    state.mask = state.mask.map((value) => 1 - value);
    drawMask();
  });
  $("mask-clear").addEventListener("click", () => presetMask(() => false));
}

wire();
loadModels()
  .then(() => {
    setBusy(false);
    setStatus("choose a class and press Generate");
  })
  .catch((error) => {
    document.body.dataset.state = "error";
    setStatus(`cannot load the models: ${error.message}`, { error: true });
  });
