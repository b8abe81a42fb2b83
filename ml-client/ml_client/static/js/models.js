// The model choice: a select in the upload form when the API serves more than one model.
const field = document.getElementById("model-field");
const select = document.getElementById("model-select");

export function chosenModel() {
  return field.hidden ? "" : select.value;
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
  select.replaceChildren(
    ...body.models.map((m) => {
      const option = new Option(m.default ? `${m.name} (default)` : m.name, m.name);
      option.selected = m.name === body.default;
      return option;
    }),
  );
  field.hidden = false;
}
