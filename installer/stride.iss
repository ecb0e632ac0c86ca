; Inno Setup script: Stride for Windows (x64). UNTESTED: no Windows machine was available;
; it follows installer/stride.spec's layout (dist\Stride\stride.exe + dist\Stride\_internal\).
;
; Built by installer/build.sh when run from Git Bash with Inno Setup's iscc on PATH, or by hand:
;   py -3.11 -m venv .venv
;   .venv\Scripts\python -m pip install -e .[installer]
;   .venv\Scripts\python -m PyInstaller --noconfirm --distpath dist --workpath build\pyinstaller installer\stride.spec
;   iscc /DAppVersion=0.1.0 installer\stride.iss        -> dist\stride-0.1.0-windows-x64-setup.exe
;
; The bundle has no console (console=False in the spec), so `stride.exe --self-test` prints
; nothing: use `stride.exe --self-test --out result.json`. stride-cli is not installed on Windows.

#ifndef AppVersion
  #define AppVersion "0.1.0"
#endif

[Setup]
AppId={{8C6A3F2E-5B1D-4E7A-9C3F-2D6B8E1A4F70}
AppName=Stride
AppVersion={#AppVersion}
AppPublisher=Stride developers
AppComments=Offline desktop chat for Step 3.5/3.7 Flash with multi-token prediction
DefaultDirName={autopf}\Stride
DefaultGroupName=Stride
DisableProgramGroupPage=yes
UninstallDisplayIcon={app}\stride.exe
OutputDir=..\dist
OutputBaseFilename=stride-{#AppVersion}-windows-x64-setup
Compression=lzma2/max
SolidCompression=yes
WizardStyle=modern
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
; Per-user install without admin rights when the user asks for it.
PrivilegesRequiredOverridesAllowed=dialog
ChangesAssociations=yes

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked
Name: "gguf"; Description: "Open .gguf model files with Stride"; Flags: unchecked

[Files]
Source: "..\dist\Stride\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{group}\Stride"; Filename: "{app}\stride.exe"
Name: "{group}\{cm:UninstallProgram,Stride}"; Filename: "{uninstallexe}"
Name: "{autodesktop}\Stride"; Filename: "{app}\stride.exe"; Tasks: desktopicon

[Registry]
; Like the Linux .desktop entry (`Exec=stride %F`): here one file is passed, and any part of a split model opens the set.
Root: HKA; Subkey: "Software\Classes\.gguf\OpenWithProgids"; ValueType: string; ValueName: "Stride.gguf"; ValueData: ""; Flags: uninsdeletevalue; Tasks: gguf
Root: HKA; Subkey: "Software\Classes\Stride.gguf"; ValueType: string; ValueName: ""; ValueData: "GGUF model"; Flags: uninsdeletekey; Tasks: gguf
Root: HKA; Subkey: "Software\Classes\Stride.gguf\DefaultIcon"; ValueType: string; ValueName: ""; ValueData: "{app}\stride.exe,0"; Tasks: gguf
Root: HKA; Subkey: "Software\Classes\Stride.gguf\shell\open\command"; ValueType: string; ValueName: ""; ValueData: """{app}\stride.exe"" ""%1"""; Tasks: gguf

[Run]
Filename: "{app}\stride.exe"; Description: "{cm:LaunchProgram,Stride}"; Flags: nowait postinstall skipifsilent
