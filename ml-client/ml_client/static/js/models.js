// The model choice: a select in the upload form when the API serves more than one model, kept
// in the browser across reloads; "Compare models" sends each photo to every one of them.
const field = document.getElementById("model-field");
const select = document.getElementById("model-select");
const MODEL_KEY = "mlprod.model";
export const COMPARE = "*compare";

function saved() {
  try {
    return window.localStorage.getItem(MODEL_KEY) || "";
  } catch {
    return ""; // storage may be blocked: the API's default is chosen
  }
}

const minScore = document.getElementById("min-score");

// The lowest score the user keeps ("": the service's threshold), sent as `min_score`.
export function chosenMinScore() {
  return minScore.value;
}

export function chosenModel() {
  return field.hidden ? "" : select.value;
}

// The served models' names, the default first (empty when no choice is offered).
export function servedModels() {
  return field.hidden ? [] : Array.from(select.options, (o) => o.value).filter((v) => v !== COMPARE);
}

export async function loadModels() {
  let body;
  try {
    const response = await fetch("/app/models", { headers: { Accept: "application/json" } });
    if (!response.ok) return;
    body = await response.json();
  } catch {
    return; // no choice offered: uploads go to the API's default model
  }
  if (body.models.length < 2) return;
  const keep = saved();
  const names = body.models.map((m) => m.name);
  const chosen = names.includes(keep) || keep === COMPARE ? keep : body.default;
  select.replaceChildren(
    ...body.models.map((m) => new Option(m.default ? `${m.name} (default)` : m.name, m.name)),
    new Option("Compare models (each photo to every model)", COMPARE),
  );
  select.value = chosen;
  field.hidden = false;
}

select.addEventListener("change", () => {
  try {
    window.localStorage.setItem(MODEL_KEY, select.value);
  } catch {
    // not kept: the choice holds until the page is reloaded
  }
});
